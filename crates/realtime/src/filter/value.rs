//! Values as PostgreSQL's text output spells them, compared by their
//! column's type: numbers as numbers, timestamps as instants, booleans,
//! UUIDs in any case, text byte-wise (the C collation).

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
pub(super) enum Value<'a> {
    Integer(i128),
    Float(f64),
    Bool(bool),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i128),
    Text(std::borrow::Cow<'a, str>),
}

pub(super) fn value(kind: ValueKind, text: &str) -> Option<Value<'_>> {
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

impl Value<'_> {
    pub(super) fn into_owned(self) -> Value<'static> {
        match self {
            Value::Text(text) => Value::Text(std::borrow::Cow::Owned(text.into_owned())),
            Value::Integer(i) => Value::Integer(i),
            Value::Float(f) => Value::Float(f),
            Value::Bool(b) => Value::Bool(b),
            Value::Timestamp(t) => Value::Timestamp(t),
        }
    }

    /// One spelling per value (floats have none worth indexing).
    pub(super) fn canonical(&self) -> Option<String> {
        match self {
            Value::Integer(i) | Value::Timestamp(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Text(text) => Some(text.to_string()),
            Value::Float(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
