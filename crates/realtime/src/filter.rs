//! Subscription filters in the Supabase grammar: `column=op.value`, with
//! `eq, neq, lt, lte, gt, gte, in.(a,b)`. Several conditions joined by `&` must
//! all hold. Values compare by the column's type (numbers as numbers,
//! timestamps as instants, booleans, text byte-wise), and SQL NULL matches
//! nothing, as in a `WHERE` clause.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

impl FilterOp {
    fn parse(text: &str) -> Option<FilterOp> {
        Some(match text {
            "eq" => FilterOp::Eq,
            "neq" => FilterOp::Neq,
            "lt" => FilterOp::Lt,
            "lte" => FilterOp::Lte,
            "gt" => FilterOp::Gt,
            "gte" => FilterOp::Gte,
            "in" => FilterOp::In,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub op: FilterOp,
    /// One value, or the list of `in`.
    pub values: Vec<String>,
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
        let text = text.trim();
        if text.is_empty() {
            return Ok(SubscriptionFilter::default());
        }
        if text.len() > 4096 {
            return Err(FilterError("longer than 4096 characters".into()));
        }
        let conditions = text
            .split('&')
            .map(parse_condition)
            .collect::<Result<Vec<_>, _>>()?;
        if conditions.len() > 16 {
            return Err(FilterError("more than 16 conditions".into()));
        }
        Ok(SubscriptionFilter { conditions })
    }
}

fn parse_condition(text: &str) -> Result<Condition, FilterError> {
    let (column, rest) = text
        .split_once('=')
        .ok_or_else(|| FilterError(format!("{text:?} is not column=op.value")))?;
    let column = column.trim();
    if column.is_empty()
        || !column
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(FilterError(format!("{column:?} is not a column name")));
    }
    let (op, value) = rest
        .split_once('.')
        .ok_or_else(|| FilterError(format!("{rest:?} is not op.value")))?;
    let op = FilterOp::parse(op).ok_or_else(|| {
        FilterError(format!(
            "unknown operator {op:?} (use eq, neq, lt, lte, gt, gte or in)"
        ))
    })?;
    let values = if op == FilterOp::In {
        parse_list(value)?
    } else {
        vec![value.to_string()]
    };
    Ok(Condition {
        column: column.to_string(),
        op,
        values,
    })
}

/// `(a,b,"c,d")`: a parenthesized list, items optionally double-quoted.
fn parse_list(text: &str) -> Result<Vec<String>, FilterError> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| FilterError(format!("in expects a list like (a,b), got {text:?}")))?;
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current).trim().to_string()),
            c => current.push(c),
        }
    }
    if quoted {
        return Err(FilterError(format!("unclosed quote in {text:?}")));
    }
    items.push(current.trim().to_string());
    if items.len() > 100 {
        return Err(FilterError("in lists are limited to 100 values".into()));
    }
    Ok(items)
}

/// How values of a PostgreSQL type compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Integer,
    Float,
    Bool,
    Timestamp,
    Uuid,
    Text,
}

impl ValueKind {
    pub fn of(type_name: &str) -> ValueKind {
        match type_name {
            "int2" | "int4" | "int8" | "oid" => ValueKind::Integer,
            "float4" | "float8" | "numeric" => ValueKind::Float,
            "bool" => ValueKind::Bool,
            "timestamptz" | "timestamp" => ValueKind::Timestamp,
            "uuid" => ValueKind::Uuid,
            _ => ValueKind::Text,
        }
    }
}

#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Value<'a> {
    Integer(i128),
    Float(f64),
    Bool(bool),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i128),
    Text(std::borrow::Cow<'a, str>),
}

fn value(kind: ValueKind, text: &str) -> Option<Value<'_>> {
    Some(match kind {
        ValueKind::Integer => Value::Integer(text.trim().parse().ok()?),
        ValueKind::Float => Value::Float(text.trim().parse().ok().filter(|f: &f64| !f.is_nan())?),
        ValueKind::Bool => Value::Bool(match text.trim() {
            "t" | "true" | "TRUE" | "True" => true,
            "f" | "false" | "FALSE" | "False" => false,
            _ => return None,
        }),
        ValueKind::Timestamp => Value::Timestamp(parse_timestamp(text)?),
        ValueKind::Uuid if is_uuid(text) && text.bytes().any(|b| b.is_ascii_uppercase()) => {
            Value::Text(text.to_ascii_lowercase().into())
        }
        ValueKind::Uuid if is_uuid(text) => Value::Text(text.into()),
        ValueKind::Uuid => return None,
        ValueKind::Text => Value::Text(text.into()),
    })
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Microseconds since the Unix epoch of a timestamp in PostgreSQL's ISO
/// output (`2026-11-25 10:00:00.5+00`) or RFC 3339 (`2026-11-25T10:00:00.5Z`);
/// without an offset, UTC. `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<i128> {
    let text = text.trim();
    // every valid spelling is ASCII, so the splits below fall on characters
    if !text.is_ascii() {
        return None;
    }
    let date_end = text.find(['T', ' ']).unwrap_or(text.len());
    let (date, rest) = text.split_at(date_end);
    let mut parts = date.splitn(3, '-');
    let (year, month, day): (i32, u8, u8) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let rest = rest.get(1..).unwrap_or("");
    let offset_at = rest.find(['+', '-', 'Z']).unwrap_or(rest.len());
    let (clock, offset) = rest.split_at(offset_at);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms_parts = hms.splitn(3, ':');
    let mut number = |default: u8| -> Option<u8> {
        match hms_parts.next() {
            None | Some("") => Some(default),
            Some(digits) if digits.len() <= 2 => digits.parse().ok(),
            Some(_) => None,
        }
    };
    let (hour, minute, second) = (number(0)?, number(0)?, number(0)?);
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = fraction.get(..fraction.len().min(6)).unwrap_or("");
    let micros: u32 = if digits.is_empty() {
        0
    } else {
        let scale = 10u32.checked_pow(u32::try_from(6 - digits.len()).ok()?)?;
        digits.parse::<u32>().ok()?.checked_mul(scale)?
    };
    let time = time::Time::from_hms_micro(hour, minute, second, micros).ok()?;
    let offset_seconds = parse_offset(offset)?;
    let local = time::PrimitiveDateTime::new(date, time).assume_utc();
    Some(local.unix_timestamp_nanos() / 1000 - i128::from(offset_seconds) * 1_000_000)
}

/// `""`, `Z`, or `±HH`, `±HHMM`, `±HH:MM`, `±HH:MM:SS`, in seconds east of UTC.
fn parse_offset(offset: &str) -> Option<i32> {
    let (sign, digits) = match offset.as_bytes().first() {
        None => return Some(0),
        Some(b'Z') if offset.len() == 1 => return Some(0),
        Some(b'+') => (1, &offset[1..]),
        Some(b'-') => (-1, &offset[1..]),
        Some(_) => return None,
    };
    let mut fields = [0i32; 3];
    let parts: Vec<&str> = if digits.contains(':') {
        digits.split(':').collect()
    } else if digits.len() == 4 {
        vec![&digits[..2], &digits[2..]]
    } else {
        vec![digits]
    };
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    for (field, part) in fields.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *field = part.parse().ok()?;
    }
    let [hours, minutes, seconds] = fields;
    if hours > 15 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60 + seconds))
}

impl SubscriptionFilter {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Checks the filter against a table's columns (name → type) and parses
    /// its values once: every column must exist and every value must be
    /// valid for its type.
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
                let kind = ValueKind::of(type_name);
                let values = condition
                    .values
                    .iter()
                    .map(|v| {
                        value(kind, v).map(Value::into_owned).ok_or_else(|| {
                            FilterError(format!(
                                "{v:?} is not a valid {type_name} for column {:?}",
                                condition.column
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(CompiledCondition {
                    column: condition.column.clone(),
                    kind,
                    op: condition.op,
                    values,
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

/// A filter checked against its table, with its values parsed: what the
/// server matches every change against.
#[derive(Clone, Debug, Default)]
pub struct CompiledFilter {
    conditions: Vec<CompiledCondition>,
}

#[derive(Clone, Debug)]
struct CompiledCondition {
    column: String,
    kind: ValueKind,
    op: FilterOp,
    values: Vec<Value<'static>>,
}

impl CompiledFilter {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// True when the row satisfies every condition; `field` gives a column's
    /// text value (`None` inside for NULL).
    pub fn matches<'r>(&self, field: impl Fn(&str) -> Option<Option<&'r str>>) -> bool {
        self.conditions.iter().all(|condition| {
            let Some(Some(actual)) = field(&condition.column) else {
                return false;
            };
            let Some(actual) = value(condition.kind, actual) else {
                return false;
            };
            let compare = |expected: &Value<'static>| actual.partial_cmp(expected);
            let first = &condition.values[0];
            match condition.op {
                FilterOp::Eq => compare(first) == Some(Ordering::Equal),
                FilterOp::Neq => matches!(compare(first), Some(o) if o != Ordering::Equal),
                FilterOp::Lt => compare(first) == Some(Ordering::Less),
                FilterOp::Lte => matches!(compare(first), Some(Ordering::Less | Ordering::Equal)),
                FilterOp::Gt => compare(first) == Some(Ordering::Greater),
                FilterOp::Gte => {
                    matches!(compare(first), Some(Ordering::Greater | Ordering::Equal))
                }
                FilterOp::In => condition
                    .values
                    .iter()
                    .any(|v| compare(v) == Some(Ordering::Equal)),
            }
        })
    }

    /// The first `eq` condition as (column, canonical value), so a server
    /// can find this filter's subscriptions by the changed row's value
    /// instead of trying every one.
    pub fn index_key(&self) -> Option<(&str, String)> {
        self.conditions
            .iter()
            .filter(|c| c.op == FilterOp::Eq)
            .find_map(|c| c.values[0].canonical().map(|v| (c.column.as_str(), v)))
    }
}

impl Value<'_> {
    fn into_owned(self) -> Value<'static> {
        match self {
            Value::Text(text) => Value::Text(std::borrow::Cow::Owned(text.into_owned())),
            Value::Integer(i) => Value::Integer(i),
            Value::Float(f) => Value::Float(f),
            Value::Bool(b) => Value::Bool(b),
            Value::Timestamp(t) => Value::Timestamp(t),
        }
    }

    /// One spelling per value (floats have none worth indexing).
    fn canonical(&self) -> Option<String> {
        match self {
            Value::Integer(i) | Value::Timestamp(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Text(text) => Some(text.to_string()),
            Value::Float(_) => None,
        }
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

    const ORDER: &[(&str, &str, Option<&str>)] = &[
        ("id", "uuid", Some("6f1c2a3e-0000-4000-8000-00000000000a")),
        ("quantity", "int4", Some("250")),
        ("status", "text", Some("in_production")),
        ("factory_id", "uuid", None),
        ("due_date", "date", Some("2026-12-01")),
        (
            "created_at",
            "timestamptz",
            Some("2026-11-25 10:00:00.5+00"),
        ),
        ("urgent", "bool", Some("t")),
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
            ("due_date=lt.2026-12-02", true),
            ("created_at=gt.2026-11-25T09:59:59Z", true),
            ("created_at=eq.2026-11-25T12:00:00.5+02:00", true),
            ("urgent=eq.true", true),
            ("id=eq.6F1C2A3E-0000-4000-8000-00000000000A", true),
        ];
        for (filter, expected) in cases {
            assert_eq!(parse(filter).matches(row(ORDER)), expected, "{filter}");
        }
    }

    #[test]
    fn conditions_joined_by_ampersand_must_all_hold() {
        assert!(parse("status=eq.in_production&quantity=gt.100").matches(row(ORDER)));
        assert!(!parse("status=eq.in_production&quantity=gt.1000").matches(row(ORDER)));
    }

    #[test]
    fn null_matches_nothing_not_even_neq() {
        assert!(!parse("factory_id=eq.6f1c2a3e-0000-4000-8000-00000000000a").matches(row(ORDER)));
        assert!(!parse("factory_id=neq.6f1c2a3e-0000-4000-8000-00000000000a").matches(row(ORDER)));
    }

    #[test]
    fn the_empty_filter_matches_everything() {
        assert!(parse("").matches(row(ORDER)));
    }

    #[test]
    fn malformed_filters_are_refused_with_a_reason() {
        for (text, reason) in [
            ("quantity", "is not column=op.value"),
            ("quantity=250", "is not op.value"),
            ("quantity=like.25%", "unknown operator"),
            ("status=in.pending", "in expects a list"),
            ("drop table;=eq.1", "is not a column name"),
            ("status=in.(\"a,b)", "unclosed quote"),
        ] {
            let err = text
                .parse::<SubscriptionFilter>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn validation_knows_columns_and_value_types() {
        let columns = |name: &str| {
            ORDER
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, _)| *t)
        };
        assert!(parse("quantity=gt.10").compile(columns).is_ok());
        let unknown = parse("colour=eq.red")
            .compile(columns)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            unknown.as_deref(),
            Some("invalid filter: there is no column \"colour\"")
        );
        assert!(parse("quantity=gt.ten").compile(columns).is_err());
        assert!(parse("created_at=gt.yesterday").compile(columns).is_err());
    }

    #[test]
    fn eq_conditions_give_a_canonical_index_key() {
        let columns = |name: &str| {
            ORDER
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, _)| *t)
        };
        let compiled =
            parse("quantity=gt.5&id=eq.6F1C2A3E-0000-4000-8000-00000000000A").compile(columns);
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
        let unindexed = parse("quantity=gt.5").compile(columns);
        assert!(unindexed.is_ok_and(|c| c.index_key().is_none()));
    }

    #[test]
    fn quoted_in_values_may_hold_commas() {
        let filter = parse(r#"status=in.("a,b",c)"#);
        assert_eq!(
            filter.conditions[0].values,
            vec!["a,b".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn timestamps_parse_in_both_spellings() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:01+00"), Some(1_000_000));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:01+01:00"),
            Some(1_000_000)
        );
        assert_eq!(parse_timestamp("1970-01-01 00:00:00.25"), Some(250_000));
        assert_eq!(parse_timestamp("soon"), None);
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:00+0130"),
            Some(-5_400_000_000)
        );
        // the review's crash: a split inside a multi-byte character
        assert_eq!(parse_timestamp("2026-01-01T00:00:00+1é1"), None);
        assert_eq!(parse_timestamp("2026-01-01T00:00:00+99999999999"), None);
        assert_eq!(
            parse_timestamp("2026-01-01T00:00:00.1234567890123"),
            Some(1_767_225_600_123_456)
        );
    }
}
