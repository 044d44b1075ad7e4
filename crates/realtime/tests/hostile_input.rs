//! No input can panic the engine: property tests over everything a client
//! controls that is parsed by hand — filters (and the values they compare),
//! cursors and Phoenix frames — with arbitrary text, near-misses of valid
//! input, and multi-byte characters where the parsers split.

use proptest::prelude::*;
use threadline_realtime::cursor::ChangeCursor;
use threadline_realtime::filter::{SubscriptionFilter, parse_timestamp};
use threadline_realtime::protocol::{Frame, Vsn};

/// Column types a filter may be compiled against.
const TYPES: &[&str] = &[
    "int2",
    "int4",
    "int8",
    "float8",
    "numeric",
    "bool",
    "text",
    "uuid",
    "timestamptz",
    "timestamp",
    "date",
    "jsonb",
];

/// Text that looks almost like valid input: fragments of the grammars,
/// digits, separators and multi-byte characters, in any order.
fn near_miss() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "id",
        "=",
        "eq.",
        "neq.",
        "in.",
        "not.",
        "like.",
        "is.",
        "null",
        "(",
        ")",
        ",",
        "&",
        "\"",
        "\\",
        ".",
        "-",
        "+",
        ":",
        "/",
        "T",
        " ",
        "Z",
        "0",
        "1",
        "9",
        "2026-01-01",
        "00:00:00",
        "+1é1",
        "é",
        "😀",
        "\u{0}",
        "ß",
        "7FFFFFFFFFFFFFFF",
        "99999999999999999999",
        "[",
        "]",
        "{",
        "}",
        "null",
        "phx_join",
        "realtime:",
        "2.0.0",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|parts| parts.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), near_miss()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn filters_never_panic(text in any_text(), type_name in prop::sample::select(TYPES.to_vec())) {
        if let Ok(filter) = text.parse::<SubscriptionFilter>() {
            let compiled = filter.compile(|_| Some(type_name));
            if let Ok(compiled) = compiled {
                let _ = compiled.matches(|_| Some(Some(text.as_str())));
                let _ = compiled.index_key();
            }
        }
    }

    #[test]
    fn timestamps_never_panic(text in any_text()) {
        let _ = parse_timestamp(&text);
    }

    #[test]
    fn cursors_never_panic_and_round_trip(text in any_text()) {
        if let Ok(cursor) = text.parse::<ChangeCursor>() {
            let again: Result<ChangeCursor, _> = cursor.to_string().parse();
            prop_assert_eq!(again, Ok(cursor));
        }
    }

    #[test]
    fn frames_never_panic(text in any_text()) {
        let _ = Frame::decode(&text, Vsn::V1);
        let _ = Frame::decode(&text, Vsn::V2);
    }

    #[test]
    fn frames_with_hostile_fields_never_panic(
        topic in any_text(),
        event in any_text(),
        payload in any_text(),
    ) {
        let text = serde_json::json!([null, "1", topic, event, payload]).to_string();
        if let Ok(frame) = Frame::decode(&text, Vsn::V2) {
            let _ = frame.reply("ok", serde_json::json!({})).encode(Vsn::V1);
        }
    }
}

#[test]
fn the_reviews_crash_is_a_refusal() {
    let filter: SubscriptionFilter = "created_at=eq.2026-01-01T00:00:00+1é1"
        .parse()
        .expect("parses as a condition");
    let compiled = filter.compile(|_| Some("timestamptz"));
    assert!(
        compiled.is_err(),
        "an invalid timestamp is refused with a reason"
    );
}
