//! Subscription filters in the grammar realtime-js's `postgresChangesFilter()`
//! writes (PostgREST's): `column=op.value` conditions joined by `,` (or
//! `&`), all of which must hold. Operators: `eq, neq, lt, lte, gt, gte,
//! in.(a,b), like, ilike, is, match, imatch, isdistinct`, each optionally
//! after `not.`. Values holding `,` `(` `)` `"` `\` or surrounding spaces
//! are double-quoted, with `\"` and `\\` inside.
//!
//! A filter is checked against its table when a client joins (unknown
//! columns, values that do not fit the column's type, patterns on columns
//! that are not text, bad regular expressions: all refused with a reason),
//! then matched in memory against every change, as PostgreSQL would in a
//! `WHERE` clause: values compare by the column's type, and NULL makes a
//! comparison unknown, which no condition (negated or not) passes; `is`
//! and `isdistinct` are the NULL-safe ones.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

mod grammar;
mod value;

pub use grammar::{MAX_CONDITIONS, MAX_FILTER_LEN};
use value::{Value, value};
pub use value::{ValueKind, parse_timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Like,
    Ilike,
    Is,
    Match,
    Imatch,
    IsDistinct,
}

impl FilterOp {
    const ALL: [(&'static str, FilterOp); 13] = [
        ("eq", FilterOp::Eq),
        ("neq", FilterOp::Neq),
        ("lt", FilterOp::Lt),
        ("lte", FilterOp::Lte),
        ("gt", FilterOp::Gt),
        ("gte", FilterOp::Gte),
        ("in", FilterOp::In),
        ("like", FilterOp::Like),
        ("ilike", FilterOp::Ilike),
        ("is", FilterOp::Is),
        ("match", FilterOp::Match),
        ("imatch", FilterOp::Imatch),
        ("isdistinct", FilterOp::IsDistinct),
    ];
    const NAMES: &'static str =
        "eq, neq, lt, lte, gt, gte, in, like, ilike, is, match, imatch or isdistinct";

    fn parse(text: &str) -> Option<FilterOp> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, op)| *op)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("", |(name, _)| name)
    }
}

/// A value as written: `quoted` ones are always text (a quoted `"null"` is
/// the word, a bare `null` after `is` or `isdistinct` is SQL NULL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Literal {
    pub text: String,
    pub quoted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    /// Written after `not.`.
    pub negated: bool,
    pub op: FilterOp,
    /// One value, or the list of `in`.
    pub values: Vec<Literal>,
}

/// A parsed filter; the empty filter matches every row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid filter: {}", self.0)
    }
}

impl std::error::Error for FilterError {}

impl FromStr for SubscriptionFilter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, FilterError> {
        if text.trim().is_empty() {
            return Ok(SubscriptionFilter::default());
        }
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError(format!(
                "longer than {MAX_FILTER_LEN} characters"
            )));
        }
        let parts = grammar::split_conditions(text)?;
        if parts.len() > MAX_CONDITIONS {
            return Err(FilterError(format!(
                "more than {MAX_CONDITIONS} conditions"
            )));
        }
        let conditions = parts
            .into_iter()
            .map(|part| {
                let (column, negated, op, values) = grammar::parse_condition(part)?;
                Ok(Condition {
                    column,
                    negated,
                    op,
                    values,
                })
            })
            .collect::<Result<Vec<_>, FilterError>>()?;
        Ok(SubscriptionFilter { conditions })
    }
}

/// Regular expressions are compiled within these bounds (a pattern that
/// needs more is refused).
const REGEX_SIZE_LIMIT: usize = 1 << 18;

impl SubscriptionFilter {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Checks the filter against a table's columns (name → type) and parses
    /// its values once: every column must exist, every value must be valid
    /// for its type, and every operator must apply to it.
    pub fn compile<'a>(
        &self,
        columns: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<CompiledFilter, FilterError> {
        let conditions = self
            .conditions
            .iter()
            .map(|condition| {
                let type_name = columns(&condition.column).ok_or_else(|| {
                    FilterError(format!("there is no column {:?}", condition.column))
                })?;
                Ok(CompiledCondition {
                    column: condition.column.clone(),
                    kind: ValueKind::of(type_name),
                    negated: condition.negated,
                    test: Test::compile(condition, type_name)?,
                })
            })
            .collect::<Result<Vec<_>, FilterError>>()?;
        Ok(CompiledFilter { conditions })
    }

    /// True when the row satisfies every condition. `field` gives a column's
    /// type name and text value (`None` for NULL), or `None` if the column
    /// does not exist.
    pub fn matches<'r>(&self, field: impl Fn(&str) -> Option<(&'r str, Option<&'r str>)>) -> bool {
        self.compile(|column| field(column).map(|(type_name, _)| type_name))
            .is_ok_and(|compiled| compiled.matches(|column| field(column).map(|(_, value)| value)))
    }
}

/// A filter checked against its table, with its values parsed and its
/// patterns compiled: what the server matches every change against.
#[derive(Clone, Debug, Default)]
pub struct CompiledFilter {
    conditions: Vec<CompiledCondition>,
}

#[derive(Clone, Debug)]
struct CompiledCondition {
    column: String,
    kind: ValueKind,
    negated: bool,
    test: Test,
}

/// What one condition checks, ready to run.
#[derive(Clone, Debug)]
enum Test {
    /// `eq, neq, lt, lte, gt, gte`: the comparison's outcome must be one of these.
    Compare(&'static [Ordering], Value<'static>),
    In(Vec<Value<'static>>),
    /// `like, ilike, match, imatch`, as one regular expression.
    Pattern(regex::Regex),
    IsNull,
    /// `is.true`, `is.false`.
    IsBool(bool),
    /// `is.unknown`: a NULL boolean.
    IsUnknown,
    /// `isdistinct`: NULL-safe inequality (`None`: distinct from NULL).
    Distinct(Option<Value<'static>>),
}

fn parse_value(
    kind: ValueKind,
    literal: &Literal,
    type_name: &str,
    column: &str,
) -> Result<Value<'static>, FilterError> {
    value(kind, &literal.text)
        .map(Value::into_owned)
        .ok_or_else(|| {
            let hint = if literal.text == "null" && !literal.quoted {
                " (for NULL use is.null or isdistinct.null)"
            } else {
                ""
            };
            FilterError(format!(
                "{:?} is not a valid {type_name} for column {column:?}{hint}",
                literal.text
            ))
        })
}

impl Test {
    fn compile(condition: &Condition, type_name: &str) -> Result<Test, FilterError> {
        let kind = ValueKind::of(type_name);
        let column = condition.column.as_str();
        let first = condition
            .values
            .first()
            .ok_or_else(|| FilterError(format!("no value for column {column:?}")))?;
        let scalar = || parse_value(kind, first, type_name, column);
        use Ordering::{Equal, Greater, Less};
        Ok(match condition.op {
            FilterOp::Eq => Test::Compare(&[Equal], scalar()?),
            FilterOp::Neq => Test::Compare(&[Less, Greater], scalar()?),
            FilterOp::Lt => Test::Compare(&[Less], scalar()?),
            FilterOp::Lte => Test::Compare(&[Less, Equal], scalar()?),
            FilterOp::Gt => Test::Compare(&[Greater], scalar()?),
            FilterOp::Gte => Test::Compare(&[Greater, Equal], scalar()?),
            FilterOp::In => Test::In(
                condition
                    .values
                    .iter()
                    .map(|v| parse_value(kind, v, type_name, column))
                    .collect::<Result<_, _>>()?,
            ),
            FilterOp::Like | FilterOp::Ilike | FilterOp::Match | FilterOp::Imatch => {
                if kind != ValueKind::Text {
                    return Err(FilterError(format!(
                        "{} needs a text column; {column:?} is {type_name}",
                        condition.op.name()
                    )));
                }
                let (source, case_insensitive) = match condition.op {
                    FilterOp::Like => (like_to_regex(&first.text), false),
                    FilterOp::Ilike => (like_to_regex(&first.text), true),
                    FilterOp::Imatch => (first.text.clone(), true),
                    _ => (first.text.clone(), false),
                };
                let pattern = regex::RegexBuilder::new(&source)
                    .case_insensitive(case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        FilterError(format!(
                            "{:?} is not a pattern this server can match for column {column:?}: {}",
                            first.text,
                            e.to_string().lines().last().unwrap_or("invalid")
                        ))
                    })?;
                Test::Pattern(pattern)
            }
            FilterOp::Is => match (first.quoted, first.text.to_ascii_lowercase().as_str()) {
                (false, "null") => Test::IsNull,
                (false, "true") if kind == ValueKind::Bool => Test::IsBool(true),
                (false, "false") if kind == ValueKind::Bool => Test::IsBool(false),
                (false, "unknown") if kind == ValueKind::Bool => Test::IsUnknown,
                (false, "true" | "false" | "unknown") => {
                    return Err(FilterError(format!(
                        "is.{} needs a boolean column; {column:?} is {type_name}",
                        first.text
                    )));
                }
                _ => {
                    return Err(FilterError(format!(
                        "is takes null, true, false or unknown, not {:?}",
                        first.text
                    )));
                }
            },
            FilterOp::IsDistinct if !first.quoted && first.text == "null" => Test::Distinct(None),
            FilterOp::IsDistinct => Test::Distinct(Some(scalar()?)),
        })
    }

    /// The condition's truth for a value (`None` for NULL): `None` when
    /// unknown, as SQL's three-valued logic has it.
    fn eval(&self, kind: ValueKind, actual: Option<&str>) -> Option<bool> {
        fn typed(kind: ValueKind, text: &str) -> Option<Value<'_>> {
            value(kind, text)
        }
        let typed = |text| typed(kind, text);
        match self {
            Test::IsNull => Some(actual.is_none()),
            Test::IsUnknown => Some(actual.is_none()),
            Test::IsBool(wanted) => Some(actual.and_then(typed) == Some(Value::Bool(*wanted))),
            Test::Distinct(expected) => Some(match (actual, expected) {
                (None, None) => false,
                (None, Some(_)) | (Some(_), None) => true,
                (Some(actual), Some(expected)) => {
                    typed(actual).and_then(|a| a.partial_cmp(expected)) != Some(Ordering::Equal)
                }
            }),
            Test::Compare(outcomes, expected) => {
                let ordering = typed(actual?)?.partial_cmp(expected)?;
                Some(outcomes.contains(&ordering))
            }
            Test::In(list) => {
                let actual = typed(actual?)?;
                Some(
                    list.iter()
                        .any(|v| actual.partial_cmp(v) == Some(Ordering::Equal)),
                )
            }
            Test::Pattern(pattern) => Some(pattern.is_match(actual?)),
        }
    }
}

/// A LIKE pattern as an anchored regular expression: `%` (or PostgREST's
/// `*`) any run of characters, `_` one character, `\` escapes the next.
fn like_to_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len().saturating_add(8));
    out.push_str("(?s)^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' | '*' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push_str(&regex::escape(next.encode_utf8(&mut [0; 4])));
                }
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push('$');
    out
}

impl CompiledFilter {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// True when the row satisfies every condition; `field` gives a column's
    /// text value (`None` inside for NULL).
    pub fn matches<'r>(&self, field: impl Fn(&str) -> Option<Option<&'r str>>) -> bool {
        self.conditions.iter().all(|condition| {
            let Some(actual) = field(&condition.column) else {
                return false;
            };
            condition
                .test
                .eval(condition.kind, actual)
                .map(|truth| truth != condition.negated)
                == Some(true)
        })
    }

    /// The first plain `eq` condition as (column, canonical value), so a
    /// server can find this filter's subscriptions by the changed row's
    /// value instead of trying every one.
    pub fn index_key(&self) -> Option<(&str, String)> {
        self.conditions.iter().find_map(|c| match &c.test {
            Test::Compare([Ordering::Equal], value) if !c.negated => {
                value.canonical().map(|v| (c.column.as_str(), v))
            }
            _ => None,
        })
    }
}

/// The canonical spelling of a row's value, to look up [`CompiledFilter::index_key`]s.
pub fn canonical_value(type_name: &str, text: &str) -> Option<String> {
    value(ValueKind::of(type_name), text)?.canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(
        fields: &'a [(&'a str, &'a str, Option<&'a str>)],
    ) -> impl Fn(&str) -> Option<(&'a str, Option<&'a str>)> {
        move |name| {
            fields
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, v)| (*t, *v))
        }
    }

    fn parse(text: &str) -> SubscriptionFilter {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn columns(name: &str) -> Option<&'static str> {
        ORDER
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, t, _)| *t)
    }

    fn refusal(text: &str) -> String {
        match text.parse::<SubscriptionFilter>() {
            Err(e) => e.to_string(),
            Ok(filter) => filter
                .compile(columns)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        }
    }

    const ORDER: &[(&str, &str, Option<&str>)] = &[
        ("id", "uuid", Some("6f1c2a3e-0000-4000-8000-00000000000a")),
        ("quantity", "int4", Some("250")),
        ("status", "text", Some("in_production")),
        (
            "product",
            "text",
            Some("Crew neck, \"heavy\" (navy) \\ 220gsm"),
        ),
        ("notes", "text", None),
        ("factory_id", "uuid", None),
        ("due_date", "date", Some("2026-12-01")),
        (
            "created_at",
            "timestamptz",
            Some("2026-11-25 10:00:00.5+00"),
        ),
        ("urgent", "bool", Some("t")),
        ("archived", "bool", None),
    ];

    #[test]
    fn each_operator_compares_by_type() {
        let cases = [
            ("quantity=eq.250", true),
            ("quantity=neq.250", false),
            ("quantity=gt.99", true), // numerically, not as text ("250" < "99")
            ("quantity=lt.99", false),
            ("quantity=lte.250", true),
            ("quantity=gte.251", false),
            ("status=in.(pending,in_production)", true),
            ("status=in.(pending,shipped)", false),
            ("status=in.( pending , in_production )", true),
            ("due_date=lt.2026-12-02", true),
            ("created_at=gt.2026-11-25T09:59:59Z", true),
            ("created_at=eq.2026-11-25T12:00:00.5+02:00", true),
            ("urgent=eq.true", true),
            ("id=eq.6F1C2A3E-0000-4000-8000-00000000000A", true),
            ("status=like.in_%", true),
            ("status=like.IN_%", false),
            ("status=ilike.IN_%", true),
            ("status=like.*prod*", true),
            ("status=like.in\\_production", true),
            ("status=like.in\\%production", false),
            ("status=like.in_productio", false),
            ("status=match.^in_", true),
            ("status=match.PROD", false),
            ("status=imatch.PROD", true),
            ("status=match.\"^(in|out)_prod\"", true),
            ("notes=is.null", true),
            ("status=is.null", false),
            ("urgent=is.true", true),
            ("urgent=is.false", false),
            ("archived=is.unknown", true),
            ("urgent=is.unknown", false),
            ("status=isdistinct.shipped", true),
            ("status=isdistinct.in_production", false),
            ("notes=isdistinct.x", true),
            ("notes=isdistinct.null", false),
            ("status=isdistinct.null", true),
        ];
        for (filter, expected) in cases {
            assert_eq!(parse(filter).matches(row(ORDER)), expected, "{filter}");
        }
    }

    #[test]
    fn not_negates_every_operator() {
        let cases = [
            ("quantity=not.eq.250", false),
            ("quantity=not.gt.300", true),
            ("status=not.in.(pending,shipped)", true),
            ("status=not.like.in_%", false),
            ("status=not.ilike.*DONE*", true),
            ("status=not.match.^x", true),
            ("status=not.imatch.^IN", false),
            ("notes=not.is.null", false),
            ("status=not.is.null", true),
            ("urgent=not.is.true", false),
            ("status=not.isdistinct.in_production", true),
        ];
        for (filter, expected) in cases {
            assert_eq!(parse(filter).matches(row(ORDER)), expected, "{filter}");
        }
    }

    #[test]
    fn null_is_unknown_for_comparisons_negated_or_not() {
        for filter in [
            "factory_id=eq.6f1c2a3e-0000-4000-8000-00000000000a",
            "factory_id=neq.6f1c2a3e-0000-4000-8000-00000000000a",
            "factory_id=not.eq.6f1c2a3e-0000-4000-8000-00000000000a",
            "factory_id=not.in.(6f1c2a3e-0000-4000-8000-00000000000a)",
            "notes=like.%",
            "notes=not.like.x%",
            "notes=not.match.x",
            "archived=not.eq.true",
        ] {
            assert!(!parse(filter).matches(row(ORDER)), "{filter}");
        }
    }

    #[test]
    fn commas_and_ampersands_join_conditions_that_must_all_hold() {
        assert!(parse("status=eq.in_production,quantity=gt.100").matches(row(ORDER)));
        assert!(parse("status=eq.in_production&quantity=gt.100").matches(row(ORDER)));
        assert!(!parse("status=eq.in_production,quantity=gt.1000").matches(row(ORDER)));
        assert_eq!(
            parse("quantity=gt.0,status=in.(a,b),quantity=lt.1000")
                .conditions
                .len(),
            3
        );
    }

    #[test]
    fn quoted_values_keep_reserved_characters() {
        // as realtime-js's builder quotes them: , ( ) " \ and outer spaces
        let exact = r#"product=eq."Crew neck, \"heavy\" (navy) \\ 220gsm""#;
        assert!(parse(exact).matches(row(ORDER)));
        let filter = parse(r#"status=in.("a,b",c,"d\"e"," f ")"#);
        let values: Vec<&str> = filter.conditions[0]
            .values
            .iter()
            .map(|v| v.text.as_str())
            .collect();
        assert_eq!(values, vec!["a,b", "c", "d\"e", " f "]);
        assert!(parse(r#"product=like."Crew neck, %""#).matches(row(ORDER)));
        assert!(parse(r#"status=eq."in_production",quantity=eq.250"#).matches(row(ORDER)));
    }

    #[test]
    fn the_empty_filter_matches_everything() {
        assert!(parse("").matches(row(ORDER)));
    }

    #[test]
    fn malformed_or_unsupported_filters_are_refused_with_a_reason() {
        for (text, reason) in [
            ("quantity", "is not column=op.value"),
            ("quantity=250", "is not op.value"),
            ("quantity=cs.{1}", "unknown operator \"cs\""),
            ("quantity=not.not.eq.1", "not. may come only once"),
            ("status=in.pending", "in expects a list"),
            ("status=in.()", "at least one value"),
            ("drop table;=eq.1", "is not a column name"),
            ("status=in.(\"a,b)", "unclosed quote"),
            ("status=eq.\"a\"b", "after the closing quote"),
            ("status=eq.a\"b\"", "holds a quote"),
            ("status=eq.a,", "an empty condition"),
            ("status=eq.(a", "unclosed '('"),
            ("quantity=like.2%", "needs a text column"),
            ("status=match.\"(a\"", "not a pattern this server can match"),
            (
                "status=match.\"(a)\\\\1\"",
                "not a pattern this server can match",
            ),
            ("status=is.maybe", "is takes null, true, false or unknown"),
            ("status=is.true", "needs a boolean column"),
            ("colour=eq.red", "there is no column \"colour\""),
            ("quantity=gt.ten", "is not a valid int4"),
            ("factory_id=eq.null", "for NULL use is.null"),
            ("created_at=gt.yesterday", "is not a valid timestamptz"),
        ] {
            let err = refusal(text);
            assert!(err.contains(reason), "{text}: {err:?}");
        }
    }

    #[test]
    fn plain_eq_conditions_give_a_canonical_index_key() {
        let compiled =
            parse("quantity=gt.5,id=eq.6F1C2A3E-0000-4000-8000-00000000000A").compile(columns);
        let key = compiled
            .as_ref()
            .ok()
            .and_then(|c| c.index_key())
            .map(|(c, v)| (c.to_string(), v));
        assert_eq!(
            key,
            Some((
                "id".to_string(),
                "6f1c2a3e-0000-4000-8000-00000000000a".to_string()
            ))
        );
        assert_eq!(
            canonical_value("uuid", "6f1c2a3e-0000-4000-8000-00000000000a"),
            key.map(|(_, v)| v)
        );
        assert_eq!(canonical_value("int4", "007"), Some("7".to_string()));
        for unindexed in ["quantity=gt.5", "quantity=not.eq.5", "status=like.x"] {
            let compiled = parse(unindexed).compile(columns);
            assert!(
                compiled.is_ok_and(|c| c.index_key().is_none()),
                "{unindexed}"
            );
        }
    }

    #[test]
    fn like_patterns_escape_everything_but_their_wildcards() {
        assert_eq!(like_to_regex("a.b%"), "(?s)^a\\.b.*$");
        assert_eq!(like_to_regex("(x)_"), "(?s)^\\(x\\).$");
        assert_eq!(like_to_regex("100\\%"), "(?s)^100%$");
    }
}
