use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which change stream a cursor belongs to: one database of one PostgreSQL
/// cluster on one timeline. A restored backup, a failed-over primary or
/// another database gives another stream, whose positions mean nothing here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl StreamId {
    /// The stream of a cluster (`system_identifier`), timeline and database.
    pub fn of(system_identifier: &str, timeline: u32, database_oid: u32) -> StreamId {
        // FNV-1a: stable across builds and platforms
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let text = format!("{system_identifier}:{timeline}:{database_oid}");
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        StreamId((hash ^ (hash >> 32)) as u32)
    }
}

/// Where a change sits in the stream: the stream, the end LSN of the
/// transaction that committed it, and its index within that transaction.
/// Within one stream, cursors order changes exactly as PostgreSQL committed
/// them.
///
/// On the wire it is the string `"<stream>:<lsn>/<index>"`, stream and LSN
/// in hex, e.g. `"5f0c2a91:16B3748/0"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor {
    pub stream: StreamId,
    pub lsn: u64,
    pub index: u32,
}

impl ChangeCursor {
    pub const START: ChangeCursor = ChangeCursor {
        stream: StreamId(0),
        lsn: 0,
        index: 0,
    };

    pub fn new(lsn: u64, index: u32) -> ChangeCursor {
        ChangeCursor {
            stream: StreamId(0),
            lsn,
            index,
        }
    }

    /// The position after every change of the transaction ending at `lsn`.
    pub fn end_of(lsn: u64) -> ChangeCursor {
        ChangeCursor::new(lsn, u32::MAX)
    }

    /// Just before every transaction whose commit record starts at or
    /// after `lsn` (a slot confirmed at `lsn` streams exactly those).
    pub fn before(lsn: u64) -> ChangeCursor {
        ChangeCursor::end_of(lsn.saturating_sub(1))
    }

    /// The same position in `stream`.
    pub fn in_stream(self, stream: StreamId) -> ChangeCursor {
        ChangeCursor { stream, ..self }
    }

    /// The later of two cursors of one stream; a cursor of another stream
    /// replaces the old one (the stream started over).
    pub fn latest(current: Option<ChangeCursor>, next: ChangeCursor) -> ChangeCursor {
        match current {
            Some(current) if current.stream == next.stream => current.max(next),
            _ => next,
        }
    }
}

impl fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}:{:X}/{}", self.stream.0, self.lsn, self.index)
    }
}

impl FromStr for ChangeCursor {
    type Err = String;

    /// `"<stream>:<lsn>/<index>"`; a cursor without a stream (`"<lsn>/<index>"`,
    /// from before streams were named) belongs to no stream and gets a reset.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a change cursor (expected \"<stream>:<lsn>/<index>\")");
        let (stream, position) = match s.split_once(':') {
            Some((stream, position)) => (stream, position),
            None => ("0", s),
        };
        let (lsn, index) = position.split_once('/').ok_or_else(bad)?;
        let hex = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(stream)
            || !hex(lsn)
            || index.is_empty()
            || !index.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok(ChangeCursor {
            stream: StreamId(u32::from_str_radix(stream, 16).map_err(|_| bad())?),
            lsn: u64::from_str_radix(lsn, 16).map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for ChangeCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChangeCursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_by_commit_then_index() {
        let a = ChangeCursor::new(0x100, 5);
        let b = ChangeCursor::new(0x101, 0);
        assert!(a < b);
        assert!(ChangeCursor::new(0x100, 1) < a);
        assert!(a < ChangeCursor::end_of(0x100));
    }

    #[test]
    fn cursors_round_trip_as_text_with_their_stream() {
        let cursor = ChangeCursor::new(0x16B3748, 3).in_stream(StreamId(0x5f0c2a91));
        assert_eq!(cursor.to_string(), "5f0c2a91:16B3748/3");
        assert_eq!("5f0c2a91:16B3748/3".parse(), Ok(cursor));
        assert_eq!("16B3748/3".parse(), Ok(ChangeCursor::new(0x16B3748, 3)));
        for bad in [
            "16B3748", "zz/1", "1/-1", "1/+1", ":1/1", "x:1/1", "1:1/", "é:1/1", "1:1/1/1",
        ] {
            assert!(bad.parse::<ChangeCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_is_named_by_cluster_timeline_and_database() {
        let one = StreamId::of("7712119657967102549", 1, 16384);
        assert_eq!(one, StreamId::of("7712119657967102549", 1, 16384));
        assert_ne!(one, StreamId::of("7712119657967102549", 2, 16384));
        assert_ne!(one, StreamId::of("7712119657967102549", 1, 16385));
        assert_ne!(one, StreamId::of("7712119657967102550", 1, 16384));
    }

    #[test]
    fn a_new_stream_replaces_the_old_cursor() {
        let old = ChangeCursor::new(0x900, 0).in_stream(StreamId(1));
        let new = ChangeCursor::new(0x100, 0).in_stream(StreamId(2));
        assert_eq!(ChangeCursor::latest(Some(old), new), new);
        let later = ChangeCursor::new(0x950, 0).in_stream(StreamId(1));
        assert_eq!(ChangeCursor::latest(Some(later), old), later);
    }
}
