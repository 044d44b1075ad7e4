//! Reading and clearing the fields of the page's hand-submitted forms.

use leptos::prelude::*;

/// Reads a form field by name.
pub(super) fn field(form: &NodeRef<leptos::html::Form>, name: &str) -> String {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        form.get_untracked()
            .and_then(|form| form.elements().named_item(name))
            .and_then(|element| {
                element
                    .dyn_ref::<web_sys::HtmlTextAreaElement>()
                    .map(|t| t.value())
                    .or_else(|| {
                        element
                            .dyn_ref::<web_sys::HtmlSelectElement>()
                            .map(|s| s.value())
                    })
                    .or_else(|| {
                        element
                            .dyn_ref::<web_sys::HtmlInputElement>()
                            .map(|i| i.value())
                    })
            })
            .unwrap_or_default()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (form, name);
        String::new()
    }
}

pub(super) fn clear_text(form: &NodeRef<leptos::html::Form>) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        if let Some(text) = form
            .get_untracked()
            .and_then(|form| {
                form.elements()
                    .named_item("text")
                    .or_else(|| form.elements().named_item("body"))
            })
            .and_then(|element| element.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
        {
            text.set_value("");
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = form;
}
