use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;

use crate::app::Session;
use crate::components::form_feedback::{FormError, action_error};

#[component]
pub fn LoginPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let error = action_error(session.login);
    view! {
        <Title text="Sign in · Threadline"/>
        {move || session.user.get().is_some().then(|| view! { <Redirect path="/orders"/> })}
        <section class="card narrow login">
            <h1>"Sign in"</h1>
            <p class="muted">"Buyers and factory staff of Sleek Apparel."</p>
            <ActionForm action=session.login attr:class="stack">
                <label>"Email"
                    <input type="email" name="email" autocomplete="username" required autofocus/>
                </label>
                <label>"Password"
                    <input type="password" name="password" autocomplete="current-password" required/>
                </label>
                <FormError message=error/>
                <button type="submit" class="button primary">"Sign in"</button>
            </ActionForm>
            <details class="demo-accounts">
                <summary>"Demo accounts"</summary>
                <p>"Password for all: " <code>"threadline"</code></p>
                <ul>
                    <li><code>"buyer@sleek.test"</code>" · buyer"</li>
                    <li><code>"buyer2@sleek.test"</code>" · buyer"</li>
                    <li><code>"factory@sleek.test"</code>" · factory staff"</li>
                    <li><code>"factory2@sleek.test"</code>" · factory staff"</li>
                    <li><code>"admin@sleek.test"</code>" · admin"</li>
                </ul>
            </details>
        </section>
    }
}
