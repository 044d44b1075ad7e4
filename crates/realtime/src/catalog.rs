//! The published tables and their columns, read once at start: joins are
//! validated against it, and decoded columns are named by it.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

use crate::change::Column;

/// The publication every realtime server streams (created by the app's migrations).
pub const PUBLICATION: &str = "threadline_realtime";

/// The published tables: their streamed columns and primary keys.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<String, TableInfo>,
    /// Tables that are streamed for the engine's own use (who has which
    /// rights), never to subscribers.
    hidden: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct TableInfo {
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
}

impl Catalog {
    pub async fn load(pool: &PgPool) -> Result<Catalog, sqlx::Error> {
        // `attnames` is the publication's column list for the table (all
        // columns when it has none): only those are streamed.
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "select p.tablename::text, a.attname::text, t.typname::text \
             from pg_publication_tables p \
             join pg_namespace n on n.nspname = p.schemaname \
             join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename \
             join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
                and a.attname = any(p.attnames) \
             join pg_type t on t.oid = a.atttypid \
             where p.pubname = $1 order by p.tablename, a.attnum",
        )
        .bind(PUBLICATION)
        .fetch_all(pool)
        .await?;
        let mut tables: HashMap<String, TableInfo> = HashMap::new();
        for (table, name, type_name) in rows {
            tables
                .entry(table)
                .or_default()
                .columns
                .push(Column { name, type_name });
        }
        let keys: Vec<(String, String)> = sqlx::query_as(
            "select c.relname::text, a.attname::text \
             from pg_publication_tables p \
             join pg_namespace n on n.nspname = p.schemaname \
             join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename \
             join pg_index i on i.indrelid = c.oid and i.indisprimary \
             join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey) \
             where p.pubname = $1 order by c.relname, array_position(i.indkey::int2[], a.attnum)",
        )
        .bind(PUBLICATION)
        .fetch_all(pool)
        .await?;
        for (table, column) in keys {
            if let Some(info) = tables.get_mut(&table) {
                info.primary_key.push(column);
            }
        }
        Ok(Catalog {
            tables,
            hidden: HashSet::new(),
        })
    }

    /// A table's streamed columns, if it is published.
    pub fn columns(&self, table: &str) -> Option<&[Column]> {
        self.tables.get(table).map(|info| info.columns.as_slice())
    }

    /// Keeps `tables` from subscribers (they are streamed for the engine's
    /// own use only).
    pub fn hide(&mut self, tables: impl IntoIterator<Item = String>) {
        self.hidden.extend(tables);
    }

    /// Whether subscribers may listen to `table`.
    pub fn is_subscribable(&self, table: &str) -> bool {
        self.tables.contains_key(table) && !self.hidden.contains(table)
    }

    pub fn column_type(&self, table: &str, column: &str) -> Option<&str> {
        self.tables
            .get(table)?
            .columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.type_name.as_str())
    }

    /// The primary key's columns (empty when the table has none).
    pub fn primary_key(&self, table: &str) -> &[String] {
        self.tables
            .get(table)
            .map_or(&[][..], |info| info.primary_key.as_slice())
    }

    /// The tables subscribers may listen to, in order, for messages that list them.
    pub fn table_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .tables
            .keys()
            .map(String::as_str)
            .filter(|name| !self.hidden.contains(*name))
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether nothing is published for subscribers.
    pub fn is_empty(&self) -> bool {
        self.table_names().is_empty()
    }
}

/// Type names of built-in types by OID, for columns the catalog does not know.
pub fn builtin_type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
}
