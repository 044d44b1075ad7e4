//! The published tables and their columns, read once at start: joins are
//! validated against it, and decoded columns are named by it.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::change::Column;

/// The publication every realtime server streams (created by the app's migrations).
pub const PUBLICATION: &str = "threadline_realtime";

/// Column types of the published tables.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: HashMap<String, Vec<Column>>,
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
        let mut tables: HashMap<String, Vec<Column>> = HashMap::new();
        for (table, name, type_name) in rows {
            tables
                .entry(table)
                .or_default()
                .push(Column { name, type_name });
        }
        Ok(Catalog { tables })
    }

    pub fn column_type(&self, table: &str, column: &str) -> Option<&str> {
        self.tables
            .get(table)?
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.type_name.as_str())
    }

    /// Table names in order, for messages that list them.
    pub fn table_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tables.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
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
