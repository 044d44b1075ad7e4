//! Who else is here, and who is typing: avatars from a room's presence,
//! and "… is typing" from its broadcasts (a person stops counting as typing
//! a few seconds after their last keystroke, or at once when they send).

use leptos::prelude::*;
use threadline_realtime::client::Present;
use uuid::Uuid;

/// How long someone counts as typing after the last sign of it.
const TYPING_FOR_MS: f64 = 4_000.0;
/// How often a typist tells the others (while they keep typing).
const TYPING_EVERY_MS: f64 = 2_000.0;

fn now_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

/// A person's initials, for their avatar.
pub fn initials(name: &str) -> String {
    let letters: String = name
        .split_whitespace()
        .filter_map(|word| word.chars().next())
        .take(2)
        .collect();
    if letters.is_empty() {
        "?".into()
    } else {
        letters.to_uppercase()
    }
}

/// The avatars of the others in a room.
#[component]
pub fn Viewers(present: ReadSignal<Vec<Present>>, me: Uuid) -> impl IntoView {
    let me = me.to_string();
    let others = Memo::new(move |_| {
        present.with(|people| {
            people
                .iter()
                .filter(|p| p.user_id != me)
                .map(|p| (p.user_id.clone(), p.name.clone()))
                .collect::<Vec<_>>()
        })
    });
    view! {
        <Show when=move || !others.with(Vec::is_empty)>
            <div class="viewers" data-testid="viewers">
                <span class="muted small">"Also viewing"</span>
                <ul aria-label="Also viewing this order">
                    <For each=move || others.get() key=|(id, _)| id.clone() let:person>
                        <li class="avatar" title=person.1.clone() data-user-id=person.0.clone()>
                            <span aria-hidden="true">{initials(&person.1)}</span>
                            <span class="visually-hidden">{person.1.clone()}</span>
                        </li>
                    </For>
                </ul>
            </div>
        </Show>
    }
}

/// Who is typing, as heard from broadcasts.
#[derive(Clone, Copy)]
pub struct Typists {
    /// (user id, name, when last heard in ms)
    heard: RwSignal<Vec<(String, String, f64)>>,
}

impl Default for Typists {
    fn default() -> Self {
        Self::new()
    }
}

impl Typists {
    pub fn new() -> Typists {
        Typists {
            heard: RwSignal::new(Vec::new()),
        }
    }

    /// A broadcast: `typing` (with `user_id`, `name`) or `stopped` (with `user_id`).
    pub fn hear(&self, event: &str, payload: &serde_json::Value) {
        let Some(user) = payload.get("user_id").and_then(|v| v.as_str()) else {
            return;
        };
        let user = user.to_string();
        match event {
            "typing" => {
                let name = payload
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("Someone")
                    .to_string();
                let at = now_ms();
                self.heard.update(|heard| {
                    heard.retain(|(id, _, _)| *id != user);
                    heard.push((user, name, at));
                });
                self.forget_later();
            }
            "stopped" => self
                .heard
                .update(|heard| heard.retain(|(id, _, _)| *id != user)),
            _ => {}
        }
    }

    fn forget_later(&self) {
        #[cfg(feature = "hydrate")]
        {
            let heard = self.heard;
            set_timeout(
                move || {
                    let now = now_ms();
                    heard.try_update(|h| h.retain(|(_, _, at)| now - at < TYPING_FOR_MS));
                },
                std::time::Duration::from_millis(TYPING_FOR_MS as u64 + 50),
            );
        }
    }

    /// The names of those typing now, but `me`.
    pub fn names(&self, me: Uuid) -> Vec<String> {
        let me = me.to_string();
        let now = now_ms();
        self.heard.with(|heard| {
            heard
                .iter()
                .filter(|(id, _, at)| *id != me && now - at < TYPING_FOR_MS)
                .map(|(_, name, _)| name.clone())
                .collect()
        })
    }
}

/// "Ann is typing…", "Ann and Bo are typing…".
#[component]
pub fn TypingNote(#[prop(into)] names: Signal<Vec<String>>) -> impl IntoView {
    let text = move || {
        let names = names.get();
        match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            [first, second] => format!("{first} and {second} are typing…"),
            [first, rest @ ..] => format!("{first} and {} others are typing…", rest.len()),
        }
    };
    view! {
        <p class="typing" role="status" aria-live="polite" data-testid="typing">{text}</p>
    }
}

/// Tells others when this person types: at most every two seconds while
/// they type, and `stopped` when they send or clear the text.
#[derive(Clone, Copy)]
pub struct Typing {
    last_told: StoredValue<f64>,
}

impl Default for Typing {
    fn default() -> Self {
        Self::new()
    }
}

impl Typing {
    pub fn new() -> Typing {
        Typing {
            last_told: StoredValue::new(f64::MIN),
        }
    }

    /// Whether a keystroke now should be told (and notes that it was).
    pub fn keystroke(&self) -> bool {
        let now = now_ms();
        if now - self.last_told.get_value() < TYPING_EVERY_MS {
            return false;
        }
        self.last_told.set_value(now);
        true
    }

    /// They stopped (sent, or cleared the text): the next keystroke is told at once.
    pub fn stopped(&self) {
        self.last_told.set_value(f64::MIN);
    }
}

#[cfg(test)]
mod tests {
    use super::initials;

    #[test]
    fn initials_are_the_first_letters_of_two_words() {
        assert_eq!(initials("Rahim Chowdhury"), "RC");
        assert_eq!(initials("inês costa silva"), "IC");
        assert_eq!(initials("Mo"), "M");
        assert_eq!(initials("  "), "?");
    }
}
