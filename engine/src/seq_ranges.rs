//! [`SeqRanges`]: a set of seqs kept as sorted, disjoint, non-adjacent inclusive ranges.
//!
//! A conversation's held seqs are a set, not a watermark: the newest-N policy leaves an explicit
//! hole between old and new history, and a push beyond the next seq leaves a gap until it is
//! pulled. Storing ranges keeps memory proportional to the number of holes, not messages.

use serde::{Deserialize, Serialize};

/// A server-assigned position in a conversation: strictly increasing and gap-free per
/// conversation, starting at 1. `Seq(0)` means "nothing yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// The seq before this one (`Seq(0)` stays `Seq(0)`).
    pub fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

/// An inclusive range of seqs, `start..=end`, with `start <= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeqRange {
    /// First seq in the range.
    pub start: Seq,
    /// Last seq in the range (inclusive).
    pub end: Seq,
}

impl SeqRange {
    /// The range `start..=end`. Returns `None` when `start > end`.
    pub fn new(start: Seq, end: Seq) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// Number of seqs in the range, saturating at `u64::MAX`: the full range `0..=u64::MAX`
    /// holds 2^64 seqs, one more than a `u64` can count. Seq 0 is never a message, but a range
    /// decoded from the wire or a store may start there.
    pub fn len(&self) -> u64 {
        (self.end.0 - self.start.0).saturating_add(1)
    }

    /// A range is never empty; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `seq` lies in the range.
    pub fn contains(&self, seq: Seq) -> bool {
        self.start <= seq && seq <= self.end
    }
}

/// A set of seqs as sorted, disjoint, non-adjacent inclusive ranges.
///
/// Invariant: for consecutive ranges `a`, `b`: `a.end + 1 < b.start`. Every mutation restores it,
/// so two sets holding the same seqs compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<SeqRange>", into = "Vec<SeqRange>")]
pub struct SeqRanges {
    ranges: Vec<SeqRange>,
}

/// Error for a range list that breaks the [`SeqRanges`] invariant (unsorted, overlapping,
/// adjacent or reversed), for example read back from a corrupt store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq ranges are not sorted, disjoint and non-adjacent at index {index}")]
pub struct InvalidSeqRanges {
    /// Index of the first offending range.
    pub index: usize,
}

impl TryFrom<Vec<SeqRange>> for SeqRanges {
    type Error = InvalidSeqRanges;

    fn try_from(ranges: Vec<SeqRange>) -> Result<Self, Self::Error> {
        for (index, r) in ranges.iter().enumerate() {
            if r.start > r.end {
                return Err(InvalidSeqRanges { index });
            }
            if index > 0 && ranges[index - 1].end.0.saturating_add(1) >= r.start.0 {
                return Err(InvalidSeqRanges { index });
            }
        }
        Ok(Self { ranges })
    }
}

impl From<SeqRanges> for Vec<SeqRange> {
    fn from(set: SeqRanges) -> Self {
        set.ranges
    }
}

impl FromIterator<Seq> for SeqRanges {
    fn from_iter<I: IntoIterator<Item = Seq>>(iter: I) -> Self {
        let mut set = Self::new();
        for seq in iter {
            set.insert(seq);
        }
        set
    }
}

impl SeqRanges {
    /// The empty set.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// A set holding exactly `start..=end` (empty when `start > end`).
    pub fn from_range(start: Seq, end: Seq) -> Self {
        let mut set = Self::new();
        set.insert_range(start, end);
        set
    }

    /// The ranges, sorted ascending.
    pub fn ranges(&self) -> &[SeqRange] {
        &self.ranges
    }

    /// Whether the set holds no seq.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many seqs the set holds, saturating at `u64::MAX` (see [`SeqRange::len`]).
    pub fn count(&self) -> u64 {
        self.ranges
            .iter()
            .map(SeqRange::len)
            .fold(0, u64::saturating_add)
    }

    /// The smallest seq held.
    pub fn min(&self) -> Option<Seq> {
        self.ranges.first().map(|r| r.start)
    }

    /// The largest seq held.
    pub fn max(&self) -> Option<Seq> {
        self.ranges.last().map(|r| r.end)
    }

    /// Whether `seq` is held. O(log ranges).
    pub fn contains(&self, seq: Seq) -> bool {
        let idx = self.ranges.partition_point(|r| r.end < seq);
        self.ranges.get(idx).is_some_and(|r| r.start <= seq)
    }

    /// Whether every seq of `start..=end` is held (true for an empty interval).
    pub fn contains_range(&self, start: Seq, end: Seq) -> bool {
        if start > end {
            return true;
        }
        let idx = self.ranges.partition_point(|r| r.end < start);
        self.ranges
            .get(idx)
            .is_some_and(|r| r.start <= start && end <= r.end)
    }

    /// Adds one seq. Returns whether it was new.
    pub fn insert(&mut self, seq: Seq) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.insert_range(seq, seq);
        true
    }

    /// Adds every seq of `start..=end`; a no-op when `start > end`.
    pub fn insert_range(&mut self, start: Seq, end: Seq) {
        if start > end {
            return;
        }
        // First range that touches or follows `start` (touching: r.end + 1 >= start).
        let lo = self
            .ranges
            .partition_point(|r| r.end.0.saturating_add(1) < start.0);
        // First range that starts strictly after `end + 1` (cannot be merged).
        let hi = self
            .ranges
            .partition_point(|r| r.start.0 <= end.0.saturating_add(1));
        let mut merged = SeqRange { start, end };
        if lo < hi {
            merged.start = merged.start.min(self.ranges[lo].start);
            merged.end = merged.end.max(self.ranges[hi - 1].end);
        }
        self.ranges.splice(lo..hi, std::iter::once(merged));
    }

    /// Adds every seq of `other`.
    pub fn union_with(&mut self, other: &SeqRanges) {
        for r in &other.ranges {
            self.insert_range(r.start, r.end);
        }
    }

    /// Removes every seq of `start..=end`; a no-op when `start > end`.
    pub fn remove_range(&mut self, start: Seq, end: Seq) {
        if start > end {
            return;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for r in &self.ranges {
            if r.end < start || r.start > end {
                out.push(*r);
                continue;
            }
            if r.start < start {
                out.push(SeqRange {
                    start: r.start,
                    end: Seq(start.0 - 1),
                });
            }
            if r.end > end {
                out.push(SeqRange {
                    start: Seq(end.0 + 1),
                    end: r.end,
                });
            }
        }
        self.ranges = out;
    }

    /// Removes every seq below `floor`.
    pub fn remove_below(&mut self, floor: Seq) {
        if floor.0 > 0 {
            self.remove_range(Seq(0), Seq(floor.0 - 1));
        }
    }

    /// The last seq of the held run that contains `seq`, if `seq` is held.
    pub fn run_end(&self, seq: Seq) -> Option<Seq> {
        let idx = self.ranges.partition_point(|r| r.end < seq);
        self.ranges
            .get(idx)
            .filter(|r| r.start <= seq)
            .map(|r| r.end)
    }

    /// The held seqs that lie in `start..=end`.
    pub fn intersect(&self, start: Seq, end: Seq) -> SeqRanges {
        let mut out = SeqRanges::new();
        if start > end {
            return out;
        }
        let idx = self.ranges.partition_point(|r| r.end < start);
        for r in self.ranges[idx..].iter().take_while(|r| r.start <= end) {
            out.ranges.push(SeqRange {
                start: r.start.max(start),
                end: r.end.min(end),
            });
        }
        out
    }

    /// How many held seqs lie in `start..=end`, saturating at `u64::MAX` (see
    /// [`SeqRange::len`]).
    pub fn count_in(&self, start: Seq, end: Seq) -> u64 {
        if start > end {
            return 0;
        }
        let idx = self.ranges.partition_point(|r| r.end < start);
        self.ranges[idx..]
            .iter()
            .take_while(|r| r.start <= end)
            .map(|r| (r.end.min(end).0 - r.start.max(start).0).saturating_add(1))
            .fold(0, u64::saturating_add)
    }

    /// The seqs of `start..=end` that are *not* held, as ranges ascending.
    pub fn gaps_in(&self, start: Seq, end: Seq) -> Vec<SeqRange> {
        let mut gaps = Vec::new();
        if start > end {
            return gaps;
        }
        let mut cursor = start;
        let idx = self.ranges.partition_point(|r| r.end < start);
        for r in self.ranges[idx..].iter().take_while(|r| r.start <= end) {
            if r.start > cursor {
                gaps.push(SeqRange {
                    start: cursor,
                    end: Seq(r.start.0 - 1),
                });
            }
            if r.end >= end {
                return gaps;
            }
            cursor = Seq(r.end.0 + 1);
        }
        gaps.push(SeqRange { start: cursor, end });
        gaps
    }

    /// Iterates over every seq held, ascending. Only for small sets (tests, debugging).
    pub fn iter(&self) -> impl Iterator<Item = Seq> + '_ {
        self.ranges
            .iter()
            .flat_map(|r| (r.start.0..=r.end.0).map(Seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn s(v: u64) -> Seq {
        Seq(v)
    }

    #[test]
    fn insert_merges_adjacent_and_overlapping() {
        let mut set = SeqRanges::new();
        set.insert_range(s(5), s(7));
        set.insert_range(s(1), s(2));
        assert_eq!(set.ranges().len(), 2);
        set.insert(s(3));
        set.insert(s(4));
        assert_eq!(
            set.ranges(),
            &[SeqRange {
                start: s(1),
                end: s(7)
            }]
        );
        set.insert_range(s(10), s(12));
        set.insert_range(s(6), s(11));
        assert_eq!(
            set.ranges(),
            &[SeqRange {
                start: s(1),
                end: s(12)
            }]
        );
        assert!(!set.insert(s(4)));
    }

    #[test]
    fn gaps_and_counts() {
        let mut set = SeqRanges::new();
        set.insert_range(s(3), s(5));
        set.insert_range(s(9), s(9));
        assert_eq!(
            set.gaps_in(s(1), s(10)),
            vec![
                SeqRange {
                    start: s(1),
                    end: s(2)
                },
                SeqRange {
                    start: s(6),
                    end: s(8)
                },
                SeqRange {
                    start: s(10),
                    end: s(10)
                }
            ]
        );
        assert!(set.gaps_in(s(3), s(5)).is_empty());
        assert_eq!(set.count_in(s(4), s(9)), 3);
        assert!(set.contains_range(s(3), s(5)));
        assert!(!set.contains_range(s(3), s(6)));
        set.remove_range(s(4), s(4));
        assert_eq!(set.count(), 3);
        set.remove_below(s(9));
        assert_eq!(
            set.ranges(),
            &[SeqRange {
                start: s(9),
                end: s(9)
            }]
        );
    }

    #[test]
    fn rejects_invalid_lists() {
        let bad = vec![
            SeqRange {
                start: s(1),
                end: s(3),
            },
            SeqRange {
                start: s(4),
                end: s(6),
            },
        ];
        assert_eq!(SeqRanges::try_from(bad), Err(InvalidSeqRanges { index: 1 }));
        let reversed = vec![SeqRange {
            start: s(5),
            end: s(1),
        }];
        assert!(SeqRanges::try_from(reversed).is_err());
    }

    /// Differential check against a naive BTreeSet over a deterministic pseudo-random workload.
    #[test]
    fn matches_naive_model() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        let mut set = SeqRanges::new();
        let mut model = BTreeSet::new();
        for _ in 0..5_000 {
            let a = next(200);
            let b = a + next(8);
            if next(4) == 0 {
                set.remove_range(s(a), s(b));
                for v in a..=b {
                    model.remove(&v);
                }
            } else {
                set.insert_range(s(a), s(b));
                model.extend(a..=b);
            }
            let lo = next(200);
            let hi = lo + next(50);
            let naive_count = model.range(lo..=hi).count() as u64;
            assert_eq!(set.count_in(s(lo), s(hi)), naive_count);
            let gap_count: u64 = set.gaps_in(s(lo), s(hi)).iter().map(SeqRange::len).sum();
            assert_eq!(gap_count + naive_count, hi - lo + 1);
        }
        let collected: Vec<u64> = set.iter().map(|q| q.0).collect();
        assert_eq!(collected, model.into_iter().collect::<Vec<_>>());
        let round: SeqRanges = SeqRanges::try_from(Vec::from(set.clone())).unwrap();
        assert_eq!(round, set);
    }

    /// `[[0, u64::MAX]]` holds 2^64 seqs: decoding it is fine (seq 0 is never a message, but a
    /// range may start there), and counting saturates instead of overflowing.
    #[test]
    fn full_range_counts_saturate() {
        let set: SeqRanges = serde_json::from_str(&format!("[[0, {}]]", u64::MAX)).unwrap();
        let r = set.ranges()[0];
        assert_eq!(r.len(), u64::MAX);
        assert_eq!(set.count(), u64::MAX);
        assert_eq!(set.count_in(s(0), s(u64::MAX)), u64::MAX);
        assert_eq!(set.count_in(s(1), s(u64::MAX)), u64::MAX);
        assert_eq!(set.count_in(s(0), s(u64::MAX - 1)), u64::MAX);
        assert_eq!(SeqRanges::from_range(s(0), s(u64::MAX)), set);
        // Below 2^64 seqs the counts stay exact.
        let two: SeqRanges = serde_json::from_str(&format!("[[0, 5], [7, {}]]", u64::MAX)).unwrap();
        assert_eq!(two.count(), u64::MAX);
        assert_eq!(two.count_in(s(1), s(u64::MAX)), u64::MAX - 1);
        assert_eq!(two.count_in(s(6), s(u64::MAX)), u64::MAX - 6);
    }
}
