//! Shards: one machine's share of a data set when an evaluation is split across several.
//!
//! `--shard i/n` takes the items at positions `p` with `p % n == i`, so the shares interleave
//! (each holds every class) and results merge by item key whatever the split.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DatasetError;

/// One part of an evaluation split across machines: the items at positions `p` with
/// `p % count == index`. Written `index/count`, 0-based (`0/4` .. `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// This part, `0 <= index < count`.
    pub index: usize,
    /// The number of parts.
    pub count: usize,
}

impl Shard {
    /// The whole data set: `0/1`.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// A shard, checked: `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, DatasetError> {
        if count == 0 || index >= count {
            return Err(DatasetError::Shard {
                given: format!("{index}/{count}"),
                reason: if count == 0 {
                    "the number of shards must be at least 1".into()
                } else {
                    format!("shard index {index} is not below the shard count {count}")
                },
            });
        }
        Ok(Shard { index, count })
    }

    /// Whether the item at `position` belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        self.count > 0 && position % self.count == self.index
    }

    /// This shard's items, in order.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, item)| item.clone())
            .collect()
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DatasetError::Shard {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let index = i.trim().parse().map_err(|_| bad("the index is not a whole number"))?;
        let count = n.trim().parse().map_err(|_| bad("the count is not a whole number"))?;
        Shard::new(index, count).map_err(|e| match e {
            DatasetError::Shard { reason, .. } => bad(&reason),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        assert_eq!(s.to_string(), "1/3");
        assert_eq!(" 0 / 1".parse::<Shard>().unwrap(), Shard::ALL);
        for bad in ["3/3", "0/0", "1", "a/2", "1/b", "-1/2", ""] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")) && e.contains("i/n"), "{e}");
        }
        assert!("3/3".parse::<Shard>().unwrap_err().to_string().contains("not below"));
        let items: Vec<usize> = (0..10).collect();
        let parts: Vec<Vec<usize>> = (0..3).map(|i| Shard::new(i, 3).unwrap().select(&items)).collect();
        assert_eq!(parts[0], [0, 3, 6, 9]);
        assert_eq!(parts[1], [1, 4, 7]);
        assert_eq!(parts[2], [2, 5, 8]);
        assert!(Shard::ALL.contains(12345));
        assert!(!Shard::new(1, 2).unwrap().contains(4));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Shard>(&json).unwrap(), s);
    }
}
