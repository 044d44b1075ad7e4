//! Who may see a row, decided in memory for every change: a row carries the
//! keys that open it (its owners, as the app's [`Rules`](crate::ports::Rules)
//! read them from the row itself), and a viewer holds keys. A viewer sees a
//! row when they share a key, or when they see everything. A client filter
//! can only narrow this, never widen it.

use uuid::Uuid;

/// What opens a row: a person, or a group of people (a factory's staff).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessKey {
    Person(Uuid),
    Group(Uuid),
}

/// The rights a subscription speaks with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: Uuid,
    /// Sees every row of every table (an administrator).
    pub sees_everything: bool,
    /// The keys held: always the person's own, and their groups'.
    pub keys: Vec<AccessKey>,
}

impl Viewer {
    /// Someone who sees the rows that name them.
    pub fn person(user_id: Uuid) -> Viewer {
        Viewer {
            user_id,
            sees_everything: false,
            keys: vec![AccessKey::Person(user_id)],
        }
    }

    /// Someone who sees every row.
    pub fn everything(user_id: Uuid) -> Viewer {
        Viewer {
            sees_everything: true,
            ..Viewer::person(user_id)
        }
    }

    /// Also sees the rows of `group`.
    pub fn in_group(mut self, group: Uuid) -> Viewer {
        self.keys.push(AccessKey::Group(group));
        self
    }

    pub fn may_see(&self, audience: &Audience) -> bool {
        self.sees_everything || audience.keys.iter().any(|key| self.keys.contains(key))
    }
}

/// Who may see one row, besides those who see everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audience {
    pub keys: Vec<AccessKey>,
}

impl Audience {
    /// Rows nobody but those who see everything may see.
    pub fn nobody() -> Audience {
        Audience::default()
    }

    /// The keys that open the row; absent owners (NULL) open nothing.
    pub fn of(keys: impl IntoIterator<Item = Option<AccessKey>>) -> Audience {
        let mut keys: Vec<AccessKey> = keys.into_iter().flatten().collect();
        keys.sort_unstable();
        keys.dedup();
        Audience { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUYER: Uuid = Uuid::from_u128(1);
    const OTHER_BUYER: Uuid = Uuid::from_u128(2);
    const STAFF: Uuid = Uuid::from_u128(3);
    const FACTORY: Uuid = Uuid::from_u128(10);
    const OTHER_FACTORY: Uuid = Uuid::from_u128(11);

    fn order(buyer: Uuid, factory: Option<Uuid>) -> Audience {
        Audience::of([
            Some(AccessKey::Person(buyer)),
            factory.map(AccessKey::Group),
        ])
    }

    #[test]
    fn a_row_is_seen_by_the_holders_of_its_keys_and_by_those_who_see_everything() {
        let row = order(BUYER, Some(FACTORY));
        assert!(Viewer::person(BUYER).may_see(&row));
        assert!(!Viewer::person(OTHER_BUYER).may_see(&row));
        assert!(Viewer::person(STAFF).in_group(FACTORY).may_see(&row));
        assert!(!Viewer::person(STAFF).in_group(OTHER_FACTORY).may_see(&row));
        assert!(Viewer::everything(Uuid::from_u128(99)).may_see(&row));
    }

    #[test]
    fn an_absent_owner_opens_nothing() {
        let row = order(BUYER, None);
        assert!(!Viewer::person(STAFF).in_group(FACTORY).may_see(&row));
        assert!(!Viewer::person(BUYER).may_see(&Audience::nobody()));
        assert!(Viewer::everything(BUYER).may_see(&Audience::nobody()));
    }
}
