//! Finding the subscriptions a change may concern without trying them all.
//! Per table: subscriptions whose every binding there has an `eq` condition
//! are found by the changed row's value in that column; the rest by the
//! keys their viewer holds (or among those who see everything). Candidates
//! are then checked in full (authorization, event, filter).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::access::{AccessKey, Viewer};
use crate::change::Change;
use crate::filter::canonical_value;
use crate::join::Binding;

use super::queue::SubscriptionId;

/// The table key of bindings on every table.
pub const ALL_TABLES: &str = "*";

/// A column and the canonical value a subscription's `eq` condition wants there.
pub type IndexKey = (Arc<str>, String);

/// Where a subscription is filed: per table it binds ("*" for all), its
/// `eq` keys if every binding on that table has one.
pub fn entries(bindings: &[Binding]) -> Vec<(Arc<str>, Option<Vec<IndexKey>>)> {
    let tables: HashSet<Arc<str>> = bindings
        .iter()
        .map(|b| b.table.clone().unwrap_or_else(|| ALL_TABLES.into()))
        .collect();
    tables
        .into_iter()
        .map(|table| {
            let keys = bindings
                .iter()
                .filter(|b| b.table.as_deref().unwrap_or(ALL_TABLES) == &*table)
                .map(|b| {
                    b.filter
                        .index_key()
                        .map(|(column, value)| (Arc::<str>::from(column), value))
                })
                .collect::<Option<Vec<_>>>();
            (table, keys)
        })
        .collect()
}

/// The subscriptions of one table.
#[derive(Default)]
pub struct TableIndex {
    everything: HashSet<SubscriptionId>,
    by_key: HashMap<AccessKey, HashSet<SubscriptionId>>,
    by_value: HashMap<IndexKey, HashSet<SubscriptionId>>,
    /// Columns with entries in `by_value`, and how many.
    indexed_columns: HashMap<Arc<str>, usize>,
}

impl TableIndex {
    pub fn insert(&mut self, id: SubscriptionId, viewer: &Viewer, keys: Option<Vec<IndexKey>>) {
        if let Some(keys) = keys {
            for (column, value) in keys {
                *self.indexed_columns.entry(column.clone()).or_default() += 1;
                self.by_value.entry((column, value)).or_default().insert(id);
            }
            return;
        }
        if viewer.sees_everything {
            self.everything.insert(id);
            return;
        }
        for key in &viewer.keys {
            self.by_key.entry(*key).or_default().insert(id);
        }
    }

    pub fn remove(&mut self, id: SubscriptionId, viewer: &Viewer, keys: Option<Vec<IndexKey>>) {
        if let Some(keys) = keys {
            for (column, value) in keys {
                let key = (column.clone(), value);
                if let Some(set) = self.by_value.get_mut(&key) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_value.remove(&key);
                    }
                }
                if let Some(count) = self.indexed_columns.get_mut(&column) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.indexed_columns.remove(&column);
                    }
                }
            }
            return;
        }
        self.everything.remove(&id);
        for key in &viewer.keys {
            if let Some(set) = self.by_key.get_mut(key) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
    }

    /// Adds the subscriptions `change` may concern to `out` (with repeats):
    /// by the values of the row before and after, and by who may see either.
    pub fn candidates(&self, change: &Change, out: &mut Vec<SubscriptionId>) {
        for column in self.indexed_columns.keys() {
            for row in [change.old.as_ref(), change.new.as_ref()] {
                let value = change
                    .field_in(row, column)
                    .and_then(|(type_name, value)| canonical_value(type_name, value?));
                if let Some(ids) = value.and_then(|v| self.by_value.get(&(column.clone(), v))) {
                    out.extend(ids.iter().copied());
                }
            }
        }
        out.extend(self.everything.iter().copied());
        for audience in change.audiences() {
            for key in &audience.keys {
                if let Some(ids) = self.by_key.get(key) {
                    out.extend(ids.iter().copied());
                }
            }
        }
    }

    /// Adds every subscription of the table to `out` (with repeats).
    pub fn all(&self, out: &mut Vec<SubscriptionId>) {
        out.extend(self.everything.iter().copied());
        out.extend(self.by_key.values().flatten().copied());
        out.extend(self.by_value.values().flatten().copied());
    }

    pub fn is_empty(&self) -> bool {
        self.everything.is_empty() && self.by_key.is_empty() && self.by_value.is_empty()
    }
}
