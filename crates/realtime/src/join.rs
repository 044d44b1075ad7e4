//! Join validation: a client's `postgres_changes` bindings become
//! [`Binding`]s the hub can match, or a refusal that says what is wrong.

use std::sync::Arc;

use crate::access::Viewer;
use crate::catalog::Catalog;
use crate::change::{Change, Visibility};
use crate::filter::{CompiledFilter, FilterError, SubscriptionFilter};
use crate::metrics::ErrorKind;
use crate::protocol::{ChangeKind, PostgresChangesRequest};

/// The columns a binding's payload rows are limited to.
pub type Columns = Arc<[String]>;

/// One `postgres_changes` binding, validated.
#[derive(Clone, Debug)]
pub struct Binding {
    pub id: u64,
    /// `None` for every event (`*`).
    pub kind: Option<ChangeKind>,
    /// `None` for every table.
    pub table: Option<Arc<str>>,
    pub filter: CompiledFilter,
    /// Only these columns in its events' rows; `None` for all.
    pub select: Option<Columns>,
}

/// A refusal of bad input: what to count it as and what to tell the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub ErrorKind, pub String);

impl Binding {
    /// Validates a binding as a client asked for it: a known event, the
    /// public schema, a published table (or all), and a filter whose columns
    /// and values fit the table.
    pub fn from_request(
        id: u64,
        request: &PostgresChangesRequest,
        catalog: &Catalog,
    ) -> Result<Binding, Refusal> {
        let kind = match request.event.to_ascii_uppercase().as_str() {
            "*" => None,
            "INSERT" => Some(ChangeKind::Insert),
            "UPDATE" => Some(ChangeKind::Update),
            "DELETE" => Some(ChangeKind::Delete),
            other => {
                return Err(Refusal(
                    ErrorKind::UnknownEvent,
                    format!("unknown event {other:?}: use *, INSERT, UPDATE or DELETE"),
                ));
            }
        };
        if request.schema != "public" && request.schema != "*" {
            return Err(Refusal(
                ErrorKind::UnknownTable,
                format!(
                    "unknown schema {:?}: realtime tables are in public",
                    request.schema
                ),
            ));
        }
        let table = match request.table.as_deref() {
            None | Some("*") | Some("") => None,
            Some(name) if catalog.is_subscribable(name) => Some(name),
            Some(name) => {
                return Err(Refusal(
                    ErrorKind::UnknownTable,
                    format!(
                        "unknown table {name:?}: realtime tables are {}",
                        catalog.table_names().join(", ")
                    ),
                ));
            }
        };
        let filter: SubscriptionFilter = request
            .filter
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(|e: FilterError| Refusal(ErrorKind::InvalidFilter, e.to_string()))?;
        let filter = match table {
            Some(table) => filter
                .compile(|column| catalog.column_type(table, column))
                .map_err(|e| Refusal(ErrorKind::InvalidFilter, format!("{e} in table {table}")))?,
            None if !filter.is_empty() => {
                return Err(Refusal(
                    ErrorKind::InvalidFilter,
                    "invalid filter: a filter needs a table".into(),
                ));
            }
            None => CompiledFilter::default(),
        };
        let select = match (&request.select, table) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Refusal(
                    ErrorKind::InvalidFilter,
                    "select needs a table: name the table whose columns you want".into(),
                ));
            }
            (Some(columns), Some(table)) => Some(select(columns, table, catalog)?),
        };
        Ok(Binding {
            id,
            kind,
            table: table.map(Arc::from),
            filter,
            select,
        })
    }

    /// Validates every binding of a join, numbering them from `first_id`.
    pub fn all_from_requests(
        first_id: u64,
        requests: &[PostgresChangesRequest],
        catalog: &Catalog,
    ) -> Result<Vec<Binding>, Refusal> {
        requests
            .iter()
            .zip(first_id..)
            .map(|(request, id)| Binding::from_request(id, request, catalog))
            .collect()
    }

    /// Whether the change, seen as `visibility`, is one this binding asked for.
    fn matches(&self, change: &Change, visibility: Visibility) -> bool {
        let (kind, row) = change.seen_as(visibility);
        self.kind.is_none_or(|wanted| wanted == kind)
            && self
                .table
                .as_ref()
                .is_none_or(|table| **table == *change.table.name)
            && self
                .filter
                .matches(|column| change.field_in(row, column).map(|(_, value)| value))
    }
}

/// A `select` list checked against the table: known columns, each once.
fn select(columns: &[String], table: &str, catalog: &Catalog) -> Result<Columns, Refusal> {
    let refuse = |message: String| Err(Refusal(ErrorKind::InvalidFilter, message));
    if columns.is_empty() {
        return refuse("select needs at least one column".into());
    }
    let mut chosen: Vec<String> = Vec::with_capacity(columns.len());
    for column in columns {
        if catalog.column_type(table, column).is_none() {
            return refuse(format!(
                "select: there is no column {column:?} in table {table}"
            ));
        }
        if !chosen.contains(column) {
            chosen.push(column.clone());
        }
    }
    Ok(chosen.into())
}

/// Bindings that get the same event: the columns they select, and their ids.
pub type Group = (Option<Columns>, Vec<u64>);

/// How a viewer gets a change through their bindings: the way they may see
/// it, and the ids of the bindings it matches, grouped by the columns they
/// select (one event per group); `None` when it is not for them.
pub fn matching(
    viewer: &Viewer,
    bindings: &[Binding],
    change: &Change,
) -> Option<(Visibility, Vec<Group>)> {
    let (visibility, matched): (Visibility, Vec<&Binding>) = if change.kind == ChangeKind::Truncate
    {
        // no row, nothing to authorize: whoever listens to the table refetches
        let matched = bindings
            .iter()
            .filter(|b| b.table.as_ref().is_none_or(|t| **t == *change.table.name))
            .collect();
        (Visibility::Full, matched)
    } else {
        let visibility = change.visibility(viewer)?;
        let matched = bindings
            .iter()
            .filter(|b| b.matches(change, visibility))
            .collect();
        (visibility, matched)
    };
    let mut groups: Vec<Group> = Vec::new();
    for binding in matched {
        match groups
            .iter_mut()
            .find(|(select, _)| *select == binding.select)
        {
            Some((_, ids)) => ids.push(binding.id),
            None => groups.push((binding.select.clone(), vec![binding.id])),
        }
    }
    (!groups.is_empty()).then_some((visibility, groups))
}
