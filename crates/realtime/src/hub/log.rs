//! The retention log: the most recent changes, in commit order, kept so that
//! a client that was away can resume from its cursor. What fell out of it is
//! marked by the floor: a cursor below it gets a reset, never a silent gap.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::change::Change;
use crate::cursor::ChangeCursor;

#[derive(Clone, Debug)]
pub struct Retention {
    /// Most changes kept.
    pub changes: usize,
    /// Oldest change kept.
    pub age: Duration,
    /// Most memory the kept changes take (roughly, see [`Change::size`]).
    pub bytes: usize,
}

pub struct RetentionLog {
    changes: VecDeque<Arc<Change>>,
    /// What the kept changes take, by [`Change::size`].
    bytes: usize,
    /// Every change at or before this cursor may be gone from the log.
    floor: ChangeCursor,
    /// The newest change seen.
    head: ChangeCursor,
    retention: Retention,
}

impl RetentionLog {
    pub fn new(retention: Retention) -> RetentionLog {
        RetentionLog {
            changes: VecDeque::new(),
            bytes: 0,
            floor: ChangeCursor::START,
            head: ChangeCursor::START,
            retention,
        }
    }

    /// Changes at or before `floor` are unknown here: older cursors reset.
    pub fn start_at(&mut self, floor: ChangeCursor) {
        self.floor = self.floor.max(floor);
        self.head = self.head.max(self.floor);
    }

    pub fn floor(&self) -> ChangeCursor {
        self.floor
    }

    pub fn head(&self) -> ChangeCursor {
        self.head
    }

    /// Forgets everything: the stream starts over at `floor` (changes were lost).
    pub fn restart_at(&mut self, floor: ChangeCursor) {
        self.changes.clear();
        self.bytes = 0;
        self.floor = floor;
        self.head = floor;
    }

    /// The oldest change kept.
    pub fn oldest(&self) -> Option<ChangeCursor> {
        self.changes.front().map(|c| c.cursor)
    }

    /// Appends a change newer than the head.
    pub fn append(&mut self, change: Arc<Change>) {
        self.head = change.cursor;
        self.bytes = self.bytes.saturating_add(change.size());
        self.changes.push_back(change);
    }

    /// The changes after `cursor`, oldest first, from position `skip` on.
    pub fn after(&self, cursor: ChangeCursor) -> impl Iterator<Item = &Arc<Change>> {
        let start = self.changes.partition_point(|c| c.cursor <= cursor);
        self.changes.range(start..)
    }

    /// Drops what is over the retention limits (`now_micros`: the time now,
    /// in microseconds since the Unix epoch).
    pub fn evict(&mut self, now_micros: i64) {
        let max_age = i64::try_from(self.retention.age.as_micros()).unwrap_or(i64::MAX);
        while let Some(front) = self.changes.front() {
            let too_many = self.changes.len() > self.retention.changes;
            let too_big = self.bytes > self.retention.bytes;
            let too_old = now_micros.saturating_sub(front.commit_micros) > max_age;
            if !too_many && !too_big && !too_old {
                break;
            }
            self.floor = front.cursor;
            self.bytes = self.bytes.saturating_sub(front.size());
            self.changes.pop_front();
        }
    }
}
