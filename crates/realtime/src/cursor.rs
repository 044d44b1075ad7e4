use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a change sits in the stream: the end LSN of the transaction that
/// committed it, and its index within that transaction. Cursors order
/// changes exactly as PostgreSQL committed them.
///
/// On the wire it is the string `"<lsn>/<index>"` with the LSN in hex, e.g.
/// `"16B3748/0"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor {
    pub lsn: u64,
    pub index: u32,
}

impl ChangeCursor {
    pub const START: ChangeCursor = ChangeCursor { lsn: 0, index: 0 };

    pub fn new(lsn: u64, index: u32) -> ChangeCursor {
        ChangeCursor { lsn, index }
    }

    /// The position after every change of the transaction ending at `lsn`.
    pub fn end_of(lsn: u64) -> ChangeCursor {
        ChangeCursor {
            lsn,
            index: u32::MAX,
        }
    }
}

impl fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{}", self.lsn, self.index)
    }
}

impl FromStr for ChangeCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a change cursor (expected \"<hex lsn>/<index>\")");
        let (lsn, index) = s.split_once('/').ok_or_else(bad)?;
        Ok(ChangeCursor {
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
    fn cursors_round_trip_as_text() {
        let cursor = ChangeCursor::new(0x16B3748, 3);
        assert_eq!(cursor.to_string(), "16B3748/3");
        assert_eq!("16B3748/3".parse(), Ok(cursor));
        assert!("16B3748".parse::<ChangeCursor>().is_err());
        assert!("zz/1".parse::<ChangeCursor>().is_err());
        assert!("1/-1".parse::<ChangeCursor>().is_err());
    }
}
