//! `SeqRanges` against a naive `BTreeSet<u64>` model.
//!
//! Arbitrary operations (insert, insert_range, remove_range, remove_below, union) run on a
//! `SeqRanges` and on a `BTreeSet<u64>` over a small domain: 256 values starting at a base that
//! is 0, 1, somewhere in the middle, or right below `u64::MAX` (so the saturating edges are
//! exercised). After every operation every query (contains, contains_range, count, count_in,
//! gaps_in, min, max, run_end, intersect, iter) must agree with the model, and the ranges must
//! keep the invariant (sorted, disjoint, non-adjacent), checked by hand and by a round trip
//! through `SeqRanges::try_from(Vec<SeqRange>)`.
//!
//! Then JSON: arbitrary bytes decoded as `SeqRanges` must give a clean error or a set that
//! keeps the invariant, and range lists built from arbitrary pairs (both serde forms of
//! `SeqRange`, objects and pairs) must be accepted exactly when they keep the invariant.

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidemark_engine::{Seq, SeqRange, SeqRanges};

/// Where the 256-value domain starts.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Base {
    Zero,
    One,
    Middle(u32),
    /// `u64::MAX - 255`: the domain ends at `u64::MAX`.
    Top,
}

impl Base {
    fn value(self) -> u64 {
        match self {
            Base::Zero => 0,
            Base::One => 1,
            Base::Middle(m) => (u64::from(m) << 16) | 0x8000,
            Base::Top => u64::MAX - 255,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert(u8),
    InsertRange(u8, u8),
    RemoveRange(u8, u8),
    RemoveBelow(u8),
    Union(Vec<(u8, u8)>),
    /// Queries only, at these points.
    Query(u8, u8),
}

/// A list of ranges for the JSON checks, values relative to a base.
#[derive(Arbitrary, Debug)]
struct RangeList {
    base: Base,
    pairs: Vec<(u8, u8)>,
    /// Serialize `SeqRange` as `[start, end]` rather than `{"start":..,"end":..}`.
    as_pairs: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    base: Base,
    ops: Vec<Op>,
    list: RangeList,
    /// Raw bytes decoded as JSON.
    json: Vec<u8>,
}

struct Model {
    base: u64,
    set: SeqRanges,
    naive: BTreeSet<u64>,
}

impl Model {
    fn v(&self, x: u8) -> u64 {
        self.base + u64::from(x)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Insert(x) => {
                let v = self.v(*x);
                let new = self.set.insert(Seq(v));
                assert_eq!(new, self.naive.insert(v), "insert({v}) return value");
            }
            Op::InsertRange(a, b) => {
                let (a, b) = (self.v(*a), self.v(*b));
                self.set.insert_range(Seq(a), Seq(b));
                if a <= b {
                    self.naive.extend(a..=b);
                }
            }
            Op::RemoveRange(a, b) => {
                let (a, b) = (self.v(*a), self.v(*b));
                self.set.remove_range(Seq(a), Seq(b));
                if a <= b {
                    self.naive.retain(|x| *x < a || *x > b);
                }
            }
            Op::RemoveBelow(x) => {
                let v = self.v(*x);
                self.set.remove_below(Seq(v));
                self.naive.retain(|x| *x >= v);
            }
            Op::Union(pairs) => {
                let mut other = SeqRanges::new();
                let mut other_naive = BTreeSet::new();
                for (a, b) in pairs.iter().take(16) {
                    let (a, b) = (self.v(*a), self.v(*b));
                    other.insert_range(Seq(a), Seq(b));
                    if a <= b {
                        other_naive.extend(a..=b);
                    }
                }
                check_same(&other, &other_naive, "union operand");
                self.set.union_with(&other);
                self.naive.extend(other_naive);
            }
            Op::Query(..) => {}
        }
    }

    fn check(&self, points: &[u64]) {
        check_same(&self.set, &self.naive, "after op");
        for &a in points {
            let held = self.naive.contains(&a);
            assert_eq!(self.set.contains(Seq(a)), held, "contains({a})");
            let run_end = held.then(|| {
                let mut end = a;
                while end < u64::MAX && self.naive.contains(&(end + 1)) {
                    end += 1;
                }
                Seq(end)
            });
            assert_eq!(self.set.run_end(Seq(a)), run_end, "run_end({a})");
            for &b in points {
                self.check_interval(a, b);
            }
        }
    }

    fn check_interval(&self, a: u64, b: u64) {
        let in_range: Vec<u64> = if a <= b {
            self.naive.range(a..=b).copied().collect()
        } else {
            Vec::new()
        };
        assert_eq!(
            self.set.count_in(Seq(a), Seq(b)),
            in_range.len() as u64,
            "count_in({a}, {b})"
        );
        let whole = a > b || in_range.len() as u64 == b - a + 1;
        assert_eq!(
            self.set.contains_range(Seq(a), Seq(b)),
            whole,
            "contains_range({a}, {b})"
        );
        let inter = self.set.intersect(Seq(a), Seq(b));
        check_same(
            &inter,
            &in_range.iter().copied().collect(),
            &format!("intersect({a}, {b})"),
        );
        // Gaps: the complement of the held seqs within a..=b, as maximal ranges.
        let gaps = self.set.gaps_in(Seq(a), Seq(b));
        let mut expected = SeqRanges::new();
        if a <= b {
            let mut x = a;
            loop {
                if !self.naive.contains(&x) {
                    expected.insert(Seq(x));
                }
                if x == b {
                    break;
                }
                x += 1;
            }
        }
        assert_eq!(gaps.as_slice(), expected.ranges(), "gaps_in({a}, {b})");
    }
}

/// `set` holds exactly `naive`, and keeps the invariant.
fn check_same(set: &SeqRanges, naive: &BTreeSet<u64>, what: &str) {
    check_invariant(set, what);
    let items: Vec<u64> = set.iter().map(|s| s.0).collect();
    let expected: Vec<u64> = naive.iter().copied().collect();
    assert_eq!(items, expected, "{what}: iter");
    assert_eq!(set.count(), naive.len() as u64, "{what}: count");
    assert_eq!(set.is_empty(), naive.is_empty(), "{what}: is_empty");
    assert_eq!(
        set.min().map(|s| s.0),
        naive.first().copied(),
        "{what}: min"
    );
    assert_eq!(set.max().map(|s| s.0), naive.last().copied(), "{what}: max");
    let rebuilt: SeqRanges = naive.iter().map(|v| Seq(*v)).collect();
    assert_eq!(set, &rebuilt, "{what}: equal sets compare equal");
}

fn check_invariant(set: &SeqRanges, what: &str) {
    let ranges = set.ranges();
    for (i, r) in ranges.iter().enumerate() {
        assert!(r.start <= r.end, "{what}: range {i} reversed: {ranges:?}");
        if i > 0 {
            let prev = ranges[i - 1];
            assert!(
                prev.end.0 < u64::MAX && prev.end.0 + 1 < r.start.0,
                "{what}: ranges {} and {i} overlap or touch: {ranges:?}",
                i - 1
            );
        }
    }
    let round = SeqRanges::try_from(ranges.to_vec());
    assert_eq!(round.as_ref(), Ok(set), "{what}: try_from round trip");
    let json = serde_json::to_vec(set).expect("serializing SeqRanges");
    let back: SeqRanges = serde_json::from_slice(&json).expect("decoding serialized SeqRanges");
    assert_eq!(&back, set, "{what}: JSON round trip");
}

/// Whether `pairs` keeps the invariant, by the definition.
fn valid_list(pairs: &[(u64, u64)]) -> bool {
    pairs.iter().all(|(s, e)| s <= e)
        && pairs
            .windows(2)
            .all(|w| w[0].1 < u64::MAX && w[0].1 + 1 < w[1].0)
}

fn check_json(list: &RangeList, raw: &[u8]) {
    // Arbitrary bytes: a clean error or a valid set, never a panic.
    if let Ok(set) = serde_json::from_slice::<SeqRanges>(raw) {
        check_invariant(&set, "decoded from raw bytes");
    }

    let base = list.base.value();
    let pairs: Vec<(u64, u64)> = list
        .pairs
        .iter()
        .take(32)
        .map(|(a, b)| (base + u64::from(*a), base + u64::from(*b)))
        .collect();
    let text = if list.as_pairs {
        let items: Vec<String> = pairs.iter().map(|(s, e)| format!("[{s},{e}]")).collect();
        format!("[{}]", items.join(","))
    } else {
        let items: Vec<String> = pairs
            .iter()
            .map(|(s, e)| format!("{{\"start\":{s},\"end\":{e}}}"))
            .collect();
        format!("[{}]", items.join(","))
    };
    let decoded = serde_json::from_str::<SeqRanges>(&text);
    let valid = valid_list(&pairs);
    assert_eq!(
        decoded.is_ok(),
        valid,
        "JSON {text}: accepted {:?} but valid = {valid}",
        decoded
    );
    let vec: Vec<SeqRange> = pairs
        .iter()
        .map(|(s, e)| SeqRange {
            start: Seq(*s),
            end: Seq(*e),
        })
        .collect();
    let tried = SeqRanges::try_from(vec);
    assert_eq!(tried.is_ok(), valid, "try_from({pairs:?})");
    if let (Ok(set), Ok(tried)) = (decoded, tried) {
        assert_eq!(set, tried, "JSON and try_from disagree on {pairs:?}");
        let naive: BTreeSet<u64> = pairs.iter().flat_map(|(s, e)| *s..=*e).collect();
        check_same(&set, &naive, "decoded list");
    }
}

fuzz_target!(|input: Input| {
    let mut model = Model {
        base: input.base.value(),
        set: SeqRanges::new(),
        naive: BTreeSet::new(),
    };
    for op in input.ops.iter().take(64) {
        model.apply(op);
        let mut points: Vec<u64> = match op {
            Op::Insert(x) | Op::RemoveBelow(x) => vec![model.v(*x)],
            Op::InsertRange(a, b) | Op::RemoveRange(a, b) | Op::Query(a, b) => {
                vec![model.v(*a), model.v(*b)]
            }
            Op::Union(p) => p
                .iter()
                .take(2)
                .flat_map(|(a, b)| [model.v(*a), model.v(*b)])
                .collect(),
        };
        // Domain edges and the neighbours of every range end.
        points.push(model.base);
        points.push(model.base + 255);
        for r in model.set.ranges().iter().take(2) {
            points.extend([r.start.0, r.end.0]);
            points.push(r.start.0.saturating_sub(1).max(model.base));
            points.push(r.end.0.saturating_add(1).min(model.base + 255));
        }
        points.sort_unstable();
        points.dedup();
        // Every pair of points is checked as an interval: keep it bounded.
        points.truncate(10);
        model.check(&points);
    }
    check_json(&input.list, &input.json);
});
