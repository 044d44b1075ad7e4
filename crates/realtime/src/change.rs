//! One captured row change, as the hub keeps and sends it. Its payload is
//! serialized once per way of seeing it and shared by every subscriber.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use crate::access::{Audience, Viewer};
use crate::cursor::ChangeCursor;
use crate::protocol::{ChangeKind, json_string, push_json_string};

/// A published table as logical decoding describes it.
#[derive(Debug)]
pub struct Table {
    pub schema: Arc<str>,
    pub name: Arc<str>,
    pub columns: Vec<Column>,
    /// Positions of the primary key's columns.
    primary_key: Vec<usize>,
    /// `[{"name":…,"type":…},…]`, serialized once.
    columns_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

impl Table {
    pub fn new(schema: &str, name: &str, columns: Vec<Column>, primary_key: &[String]) -> Table {
        let columns_json = format!(
            "[{}]",
            columns
                .iter()
                .map(|c| format!(
                    "{{\"name\":{},\"type\":{}}}",
                    json_string(&c.name),
                    json_string(&c.type_name)
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let primary_key = primary_key
            .iter()
            .filter_map(|key| columns.iter().position(|c| c.name == *key))
            .collect();
        Table {
            schema: schema.into(),
            name: name.into(),
            columns,
            primary_key,
            columns_json,
        }
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// A row's primary key as text, when it is one column.
    pub fn key_of<'a>(&self, row: &'a Row) -> Option<&'a str> {
        match self.primary_key.as_slice() {
            [index] => row.get(*index)?.as_deref(),
            _ => None,
        }
    }
}

/// Column values as PostgreSQL's text output, aligned with `Table::columns`;
/// `None` is SQL NULL.
pub type Row = Vec<Option<String>>;

/// One row of a table, read by column name: what the app's rules see.
#[derive(Clone, Copy)]
pub struct RowView<'a> {
    table: &'a Table,
    row: &'a Row,
}

impl<'a> RowView<'a> {
    pub fn new(table: &'a Table, row: &'a Row) -> RowView<'a> {
        RowView { table, row }
    }

    /// The table's name.
    pub fn table(&self) -> &'a str {
        &self.table.name
    }

    /// A column's text value; `None` for NULL or an unknown column.
    pub fn get(&self, column: &str) -> Option<&'a str> {
        let index = self.table.column_index(column)?;
        self.row.get(index)?.as_deref()
    }
}

/// How one viewer sees a change, by whether they may see the row before
/// and after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// As it happened: they may see the row before and after (or the one
    /// row an INSERT or DELETE has).
    Full,
    /// An UPDATE that brought the row to them: the change, with only the
    /// primary key in `old_record` (they never saw what it was).
    MovedIn,
    /// An UPDATE that took the row away from them: a DELETE, with only the
    /// primary key in `old_record` (they may not see what it became).
    MovedOut,
}

#[derive(Debug)]
pub struct Change {
    pub cursor: ChangeCursor,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_micros: i64,
    pub table: Arc<Table>,
    pub kind: ChangeKind,
    pub new: Option<Row>,
    pub old: Option<Row>,
    /// Who may see the row before the change (UPDATE, DELETE) and after it
    /// (INSERT, UPDATE).
    pub before: Option<Audience>,
    pub after: Option<Audience>,
    /// The `data` object of a `postgres_changes` event as it happened.
    data_json: String,
    /// The same for viewers the row moved to, and away from (made on first use).
    moved_in_json: OnceLock<String>,
    moved_out_json: OnceLock<String>,
}

impl Change {
    /// A change; `audience` says who may see a row of its table.
    pub fn new(
        cursor: ChangeCursor,
        commit_micros: i64,
        table: Arc<Table>,
        kind: ChangeKind,
        new: Option<Row>,
        old: Option<Row>,
        audience: impl Fn(&RowView<'_>) -> Audience,
    ) -> Change {
        let (before, after) = match kind {
            ChangeKind::Insert => (None, new.as_ref()),
            ChangeKind::Update => (old.as_ref(), new.as_ref()),
            ChangeKind::Delete => (old.as_ref(), None),
            ChangeKind::Truncate => (None, None),
        };
        let before = before.map(|row| audience(&RowView::new(&table, row)));
        let after = after.map(|row| audience(&RowView::new(&table, row)));
        let mut change = Change {
            cursor,
            commit_micros,
            table,
            kind,
            new,
            old,
            before,
            after,
            data_json: String::new(),
            moved_in_json: OnceLock::new(),
            moved_out_json: OnceLock::new(),
        };
        if kind != ChangeKind::Truncate {
            change.data_json = change.render_data(Visibility::Full, None);
        }
        change
    }

    /// Roughly how much memory the change takes, for the retention budget.
    pub fn size(&self) -> usize {
        let row = |row: &Option<Row>| {
            row.iter()
                .flatten()
                .map(|value| value.as_ref().map_or(0, String::len) + 24)
                .sum::<usize>()
        };
        std::mem::size_of::<Change>()
            + self.data_json.len()
            + row(&self.new)
            + row(&self.old)
            + self.moved_in_json.get().map_or(0, String::len)
            + self.moved_out_json.get().map_or(0, String::len)
    }

    /// How `viewer` sees this change, if at all.
    pub fn visibility(&self, viewer: &Viewer) -> Option<Visibility> {
        let sees = |audience: &Option<Audience>| audience.as_ref().map(|a| viewer.may_see(a));
        match (sees(&self.before), sees(&self.after)) {
            (Some(true), Some(true)) | (None, Some(true)) | (Some(true), None) => {
                Some(Visibility::Full)
            }
            (Some(false), Some(true)) => Some(Visibility::MovedIn),
            (Some(true), Some(false)) => Some(Visibility::MovedOut),
            _ => None,
        }
    }

    /// The changed row's primary key (when it is one column).
    pub fn key(&self) -> Option<&str> {
        self.table.key_of(self.new.as_ref().or(self.old.as_ref())?)
    }

    /// Everyone who may see the row before or after.
    pub fn audiences(&self) -> impl Iterator<Item = &Audience> {
        self.before.iter().chain(self.after.iter())
    }

    /// The event a viewer is sent, and the row their filters look at: the
    /// new row, or for a DELETE (and a move-out) the old one.
    pub fn seen_as(&self, visibility: Visibility) -> (ChangeKind, Option<&Row>) {
        match (visibility, self.kind) {
            (Visibility::MovedOut, _) | (_, ChangeKind::Delete) => {
                (ChangeKind::Delete, self.old.as_ref())
            }
            (_, kind) => (kind, self.new.as_ref()),
        }
    }

    /// The row filters look at when the change is seen as it happened.
    pub fn row(&self) -> Option<&Row> {
        self.seen_as(Visibility::Full).1
    }

    /// A column's type name and text value in [`Change::row`].
    pub fn field(&self, column: &str) -> Option<(&str, Option<&str>)> {
        self.field_in(self.row(), column)
    }

    /// A column's type name and text value in `row`.
    pub fn field_in<'a>(
        &'a self,
        row: Option<&'a Row>,
        column: &str,
    ) -> Option<(&'a str, Option<&'a str>)> {
        let index = self.table.column_index(column)?;
        let value = row?.get(index)?.as_deref();
        Some((self.table.columns[index].type_name.as_str(), value))
    }

    /// The payload of the `postgres_changes` event for the given binding
    /// ids; `select`: only these columns (made for each use, the whole
    /// row's is made once and shared).
    pub fn payload_json(
        &self,
        ids: &[u64],
        visibility: Visibility,
        select: Option<&[String]>,
    ) -> String {
        let mut out = String::with_capacity(self.payload_len());
        self.write_payload(&mut out, ids, visibility, select);
        out
    }

    /// Appends [`Change::payload_json`] to `out`.
    pub fn write_payload(
        &self,
        out: &mut String,
        ids: &[u64],
        visibility: Visibility,
        select: Option<&[String]>,
    ) {
        let selected;
        let data = match (visibility, select) {
            (_, Some(select)) => {
                selected = self.render_data(visibility, Some(select));
                &selected
            }
            (Visibility::Full, None) => &self.data_json,
            (Visibility::MovedIn, None) => self
                .moved_in_json
                .get_or_init(|| self.render_data(Visibility::MovedIn, None)),
            (Visibility::MovedOut, None) => self
                .moved_out_json
                .get_or_init(|| self.render_data(Visibility::MovedOut, None)),
        };
        out.push_str("{\"ids\":[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{id}");
        }
        out.push_str("],\"data\":");
        out.push_str(data);
        let _ = write!(out, ",\"cursor\":\"{}\"}}", self.cursor);
    }

    /// About how long [`Change::payload_json`] is.
    pub fn payload_len(&self) -> usize {
        self.data_json.len().saturating_add(64)
    }

    fn render_data(&self, visibility: Visibility, select: Option<&[String]>) -> String {
        let (kind, _) = self.seen_as(visibility);
        let mut out = String::with_capacity(256);
        out.push_str("{\"schema\":");
        push_json_string(&mut out, &self.table.schema);
        out.push_str(",\"table\":");
        push_json_string(&mut out, &self.table.name);
        out.push_str(",\"commit_timestamp\":");
        push_json_string(&mut out, &rfc3339_micros(self.commit_micros));
        out.push_str(",\"type\":\"");
        out.push_str(kind.as_str());
        out.push_str("\",\"columns\":");
        out.push_str(&self.table.columns_json);
        if let (ChangeKind::Insert | ChangeKind::Update, Some(row)) = (kind, &self.new) {
            out.push_str(",\"record\":");
            self.render_row(row, false, select, &mut out);
        }
        if let (ChangeKind::Update | ChangeKind::Delete, Some(row)) = (kind, &self.old) {
            out.push_str(",\"old_record\":");
            self.render_row(row, visibility != Visibility::Full, select, &mut out);
        }
        out.push_str(",\"errors\":null}");
        out
    }

    /// A row as a JSON object; `key_only`: just its primary key; `select`:
    /// only these columns.
    fn render_row(&self, row: &Row, key_only: bool, select: Option<&[String]>, out: &mut String) {
        out.push('{');
        let mut first = true;
        for (i, (column, value)) in self.table.columns.iter().zip(row).enumerate() {
            if (key_only && !self.table.primary_key.contains(&i))
                || select.is_some_and(|s| !s.contains(&column.name))
            {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_json_string(out, &column.name);
            out.push(':');
            match value {
                None => out.push_str("null"),
                Some(text) => push_json_value(out, &column.type_name, text),
            }
        }
        out.push('}');
    }
}

/// Appends a PostgreSQL text value as JSON, typed the way Supabase Realtime
/// sends it (realtime-js converts further by the column types it is given).
fn push_json_value(out: &mut String, type_name: &str, text: &str) {
    match type_name {
        "bool" => match text {
            "t" => out.push_str("true"),
            "f" => out.push_str("false"),
            other => push_json_string(out, other),
        },
        "int2" | "int4" | "int8" | "oid" | "float4" | "float8" | "numeric"
            if serde_json::from_str::<serde_json::Number>(text).is_ok() =>
        {
            out.push_str(text)
        }
        "json" | "jsonb" if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            out.push_str(text)
        }
        _ => push_json_string(out, text),
    }
}

pub fn rfc3339_micros(micros: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessKey;

    fn buyer_audience(row: &RowView<'_>) -> Audience {
        Audience::of([row
            .get("buyer_id")
            .and_then(|id| id.parse().ok())
            .map(AccessKey::Person)])
    }

    fn table() -> Arc<Table> {
        Arc::new(Table::new(
            "public",
            "orders",
            vec![
                Column {
                    name: "id".into(),
                    type_name: "uuid".into(),
                },
                Column {
                    name: "quantity".into(),
                    type_name: "int4".into(),
                },
                Column {
                    name: "urgent".into(),
                    type_name: "bool".into(),
                },
                Column {
                    name: "notes".into(),
                    type_name: "text".into(),
                },
                Column {
                    name: "buyer_id".into(),
                    type_name: "uuid".into(),
                },
            ],
            &["id".to_string()],
        ))
    }

    #[test]
    fn the_payload_has_the_supabase_shape_with_typed_values() {
        let buyer = uuid::Uuid::from_u128(1).to_string();
        let change = Change::new(
            ChangeCursor::new(0x10, 0),
            0,
            table(),
            ChangeKind::Update,
            Some(vec![
                Some("a".into()),
                Some("12".into()),
                Some("t".into()),
                Some("say \"hi\"".into()),
                Some(buyer.clone()),
            ]),
            Some(vec![
                Some("a".into()),
                Some("10".into()),
                Some("f".into()),
                None,
                Some(buyer.clone()),
            ]),
            buyer_audience,
        );
        let payload: serde_json::Value =
            serde_json::from_str(&change.payload_json(&[7, 9], Visibility::Full, None))
                .unwrap_or_default();
        assert_eq!(payload["ids"], serde_json::json!([7, 9]));
        assert_eq!(payload["cursor"], "00000000:10/0");
        let data = &payload["data"];
        assert_eq!(data["type"], "UPDATE");
        assert_eq!(data["commit_timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(data["record"]["quantity"], 12);
        assert_eq!(data["record"]["urgent"], true);
        assert_eq!(data["record"]["notes"], "say \"hi\"");
        assert_eq!(data["old_record"]["notes"], serde_json::Value::Null);
        assert_eq!(
            data["columns"][1],
            serde_json::json!({"name": "quantity", "type": "int4"})
        );
        assert_eq!(
            change.after,
            Some(Audience::of([Some(AccessKey::Person(
                uuid::Uuid::from_u128(1)
            ))]))
        );
    }

    /// The payload is written by hand for speed; it must be exactly what the
    /// serde types in `protocol` (the one definition clients parse) say.
    #[test]
    fn the_fast_encoder_agrees_with_the_protocol_types() {
        use crate::protocol::{ChangeData, ChangeEvent, ColumnInfo};
        let buyer = uuid::Uuid::from_u128(1).to_string();
        let change = Change::new(
            ChangeCursor::new(0x2A, 3),
            1_700_000_000_123_456,
            table(),
            ChangeKind::Update,
            Some(vec![
                Some("a\"\n\u{1F600}".into()),
                Some("-5".into()),
                Some("f".into()),
                None,
                Some(buyer.clone()),
            ]),
            Some(vec![
                None,
                Some("7".into()),
                Some("t".into()),
                Some("x".into()),
                None,
            ]),
            buyer_audience,
        );
        let raw: serde_json::Value =
            serde_json::from_str(&change.payload_json(&[4], Visibility::Full, None))
                .unwrap_or_default();
        let parsed: Result<ChangeEvent, _> = serde_json::from_value(raw.clone());
        let Ok(parsed) = parsed else {
            panic!("the payload does not parse as a ChangeEvent: {raw}");
        };
        let row = |pairs: serde_json::Value| pairs.as_object().cloned();
        let expected = ChangeEvent {
            ids: vec![4],
            cursor: ChangeCursor::new(0x2A, 3),
            data: ChangeData {
                schema: "public".into(),
                table: "orders".into(),
                commit_timestamp: "2023-11-14T22:13:20.123456Z".into(),
                kind: ChangeKind::Update,
                columns: table()
                    .columns
                    .iter()
                    .map(|c| ColumnInfo {
                        name: c.name.clone(),
                        type_name: c.type_name.clone(),
                    })
                    .collect(),
                record: row(serde_json::json!({
                    "id": "a\"\n\u{1F600}", "quantity": -5, "urgent": false, "notes": null, "buyer_id": buyer,
                })),
                old_record: row(serde_json::json!({
                    "id": null, "quantity": 7, "urgent": true, "notes": "x", "buyer_id": null,
                })),
                errors: None,
            },
        };
        assert_eq!(parsed, expected);
        assert_eq!(serde_json::to_value(&expected).ok(), Some(raw));
    }

    #[test]
    fn deletes_filter_and_authorize_on_the_old_row() {
        let change = Change::new(
            ChangeCursor::new(1, 0),
            0,
            table(),
            ChangeKind::Delete,
            None,
            Some(vec![
                Some("a".into()),
                Some("3".into()),
                None,
                None,
                Some(uuid::Uuid::from_u128(1).to_string()),
            ]),
            buyer_audience,
        );
        assert_eq!(
            change.before,
            Some(Audience::of([Some(AccessKey::Person(
                uuid::Uuid::from_u128(1)
            ))]))
        );
        assert_eq!(change.after, None);
        assert_eq!(change.field("quantity"), Some(("int4", Some("3"))));
        let payload: serde_json::Value =
            serde_json::from_str(&change.payload_json(&[1], Visibility::Full, None))
                .unwrap_or_default();
        assert!(payload["data"].get("record").is_none());
        assert_eq!(payload["data"]["old_record"]["quantity"], 3);
    }

    #[test]
    fn a_row_that_moves_between_owners_shows_each_side_only_what_it_may_see() {
        let old_buyer = uuid::Uuid::from_u128(1);
        let new_buyer = uuid::Uuid::from_u128(2);
        let row = |buyer: uuid::Uuid, notes: &str| {
            vec![
                Some("row-1".to_string()),
                Some("3".into()),
                Some("t".into()),
                Some(notes.to_string()),
                Some(buyer.to_string()),
            ]
        };
        let change = Change::new(
            ChangeCursor::new(0x10, 0),
            0,
            table(),
            ChangeKind::Update,
            Some(row(new_buyer, "for the new buyer")),
            Some(row(old_buyer, "for the old buyer")),
            buyer_audience,
        );
        let old = Viewer::person(old_buyer);
        let new = Viewer::person(new_buyer);
        assert_eq!(change.visibility(&old), Some(Visibility::MovedOut));
        assert_eq!(change.visibility(&new), Some(Visibility::MovedIn));
        assert_eq!(
            change.visibility(&Viewer::everything(old_buyer)),
            Some(Visibility::Full)
        );
        assert_eq!(
            change.visibility(&Viewer::person(uuid::Uuid::from_u128(9))),
            None
        );

        let data = |visibility| {
            let payload: serde_json::Value =
                serde_json::from_str(&change.payload_json(&[1], visibility, None))
                    .unwrap_or_default();
            payload["data"].clone()
        };
        let moved_out = data(Visibility::MovedOut);
        assert_eq!(moved_out["type"], "DELETE");
        assert_eq!(moved_out["old_record"], serde_json::json!({"id": "row-1"}));
        assert!(
            moved_out.get("record").is_none(),
            "nothing of what it became"
        );
        let moved_in = data(Visibility::MovedIn);
        assert_eq!(moved_in["type"], "UPDATE");
        assert_eq!(moved_in["old_record"], serde_json::json!({"id": "row-1"}));
        assert_eq!(moved_in["record"]["notes"], "for the new buyer");
        let full = data(Visibility::Full);
        assert_eq!(full["old_record"]["notes"], "for the old buyer");
    }
}
