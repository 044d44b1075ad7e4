//! The text of a filter, as realtime-js's `postgresChangesFilter()` and
//! PostgREST write it: conditions split at top-level `,` (or `&`), each
//! `column=[not.]op.value`, values bare or double-quoted with `\` escapes,
//! lists in parentheses.

use super::{FilterError, FilterOp, Literal};

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 32;
/// Most values in one `in` list.
pub const MAX_LIST: usize = 100;

fn error(message: impl Into<String>) -> FilterError {
    FilterError(message.into())
}

/// Splits at `,` and `&` outside double quotes and parentheses.
pub fn split_conditions(text: &str) -> Result<Vec<&str>, FilterError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut depth: usize = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '(' => depth = depth.saturating_add(1),
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| error(format!("unbalanced ')' in {text:?}")))?;
            }
            ',' | '&' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return Err(error(format!("unclosed quote in {text:?}")));
    }
    if depth > 0 {
        return Err(error(format!("unclosed '(' in {text:?}")));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// One `column=[not.]op.value` condition, as written.
pub fn parse_condition(text: &str) -> Result<(String, bool, FilterOp, Vec<Literal>), FilterError> {
    if text.trim().is_empty() {
        return Err(error(
            "an empty condition (two separators in a row, or one at the end)",
        ));
    }
    let (column, rest) = text
        .split_once('=')
        .ok_or_else(|| error(format!("{text:?} is not column=op.value")))?;
    let column = column.trim();
    if column.is_empty()
        || !column
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(error(format!("{column:?} is not a column name")));
    }
    let (negated, rest) = match rest.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let (op, value) = rest
        .split_once('.')
        .ok_or_else(|| error(format!("{rest:?} is not op.value")))?;
    let op = FilterOp::parse(op).ok_or_else(|| {
        let hint = if op == "not" {
            " (not. may come only once)"
        } else {
            ""
        };
        error(format!(
            "unknown operator {op:?}{hint}: use {}, each optionally after not.",
            FilterOp::NAMES
        ))
    })?;
    let values = match op {
        FilterOp::In => parse_list(value)?,
        _ => vec![parse_scalar(value)?],
    };
    Ok((column.to_string(), negated, op, values))
}

/// A bare value as written, or a quoted one unescaped.
fn parse_scalar(text: &str) -> Result<Literal, FilterError> {
    if text.starts_with('"') {
        return unquote(text);
    }
    if text.contains('"') {
        return Err(error(format!(
            "{text:?} holds a quote: quote the whole value (\"...\", with \\\" inside)"
        )));
    }
    Ok(Literal {
        text: text.to_string(),
        quoted: false,
    })
}

/// `"..."` with `\` escaping the next character; nothing may follow.
fn unquote(text: &str) -> Result<Literal, FilterError> {
    let mut chars = text.chars();
    chars.next(); // the opening quote
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err(error(format!("unclosed quote in {text:?}"))),
            Some('\\') => match chars.next() {
                Some(c) => value.push(c),
                None => return Err(error(format!("unclosed quote in {text:?}"))),
            },
            Some('"') => break,
            Some(c) => value.push(c),
        }
    }
    let rest = chars.as_str();
    if !rest.is_empty() {
        return Err(error(format!(
            "unexpected {rest:?} after the closing quote in {text:?}"
        )));
    }
    Ok(Literal {
        text: value,
        quoted: true,
    })
}

/// `(a,"b,c", d)`: items bare (trimmed) or quoted.
fn parse_list(text: &str) -> Result<Vec<Literal>, FilterError> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| error(format!("in expects a list like (a,b), got {text:?}")))?;
    if inner.trim().is_empty() {
        return Err(error("in needs at least one value"));
    }
    let mut items = Vec::new();
    for item in split_list(inner)? {
        let item = item.trim();
        if item.is_empty() {
            return Err(error(format!("an empty value in the list {text:?}")));
        }
        items.push(parse_scalar(item)?);
        if items.len() > MAX_LIST {
            return Err(error(format!("in lists are limited to {MAX_LIST} values")));
        }
    }
    Ok(items)
}

/// Splits a list's inside at commas outside quotes.
fn split_list(inner: &str) -> Result<Vec<&str>, FilterError> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in inner.char_indices() {
        match c {
            _ if quoted && escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&inner[start..at]);
                start = at + 1;
            }
            '(' | ')' if !quoted => {
                return Err(error(format!(
                    "a value in the list ({inner}) holds a parenthesis: quote it"
                )));
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    Ok(items)
}
