//! A set of half-open byte ranges: what part of a file the server holds.
//!
//! Segments arrive in any order, overlap and repeat (DESIGN §2), so the server keeps the bytes it holds as
//! sorted, disjoint, non-adjacent `[start, end)` ranges. The status response lists them as
//! `"ranges":[[start,end],…]` and fin lists the gaps as `missing`.
//!
//! ```text
//!  0        10        20        30        40
//!  [========)         [=========)              ranges: [0,10) [20,30)
//!           [~~~~~~~~~)         [~~~~~~~~~)    missing(40): [10,20) [30,40)
//! ```

/// Sorted, disjoint, non-adjacent half-open byte ranges. Empty ranges are never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Invariant: for consecutive `(a, b)`, `(c, d)`: `a < b < c < d` (adjacent ranges are merged).
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Adds `[start, end)`, merging it with every range it overlaps or touches. An empty or inverted
    /// range is ignored.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First range whose end reaches `start` (touching counts) and the first that starts after `end`.
        let lo = self.ranges.partition_point(|&(_, e)| e < start);
        let hi = self.ranges.partition_point(|&(s, _)| s <= end);
        if lo == hi {
            self.ranges.insert(lo, (start, end));
            return;
        }
        let merged_start = start.min(self.ranges[lo].0);
        let merged_end = end.max(self.ranges[hi - 1].1);
        self.ranges[lo] = (merged_start, merged_end);
        self.ranges.drain(lo + 1..hi);
    }

    /// True when every byte of `[start, end)` is held. An empty range is always contained.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        match self.ranges.get(i) {
            Some(&(s, e)) => s <= start && end <= e,
            None => false,
        }
    }

    /// Number of bytes held.
    pub fn covered_len(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().copied()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// End of the highest range, 0 when empty.
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |&(_, e)| e)
    }

    /// The gaps in `[0, total)`, ascending. Held bytes at or beyond `total` are ignored.
    pub fn missing(&self, total: u64) -> Vec<(u64, u64)> {
        self.missing_in(0, total)
    }

    /// The gaps in `[start, end)`, ascending.
    pub fn missing_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut cursor = start;
        let first = self.ranges.partition_point(|&(_, e)| e <= start);
        for &(s, e) in &self.ranges[first..] {
            if s >= end {
                break;
            }
            if s > cursor {
                out.push((cursor, s));
            }
            cursor = cursor.max(e);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            out.push((cursor, end));
        }
        out
    }

    /// True when every byte of `[0, total)` is held (always true for `total == 0`).
    pub fn is_complete(&self, total: u64) -> bool {
        self.contains(0, total)
    }

    /// End of the range that starts at offset 0, i.e. how many leading bytes are held without a gap.
    pub fn contiguous_prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    pub fn to_vec(&self) -> Vec<(u64, u64)> {
        self.ranges.clone()
    }

    /// Builds a set from ranges in any order, possibly overlapping; empty and inverted ones are dropped.
    pub fn from_vec(ranges: Vec<(u64, u64)>) -> RangeSet {
        let mut v: Vec<(u64, u64)> = ranges.into_iter().filter(|&(s, e)| s < e).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        RangeSet { ranges: out }
    }
}

impl FromIterator<(u64, u64)> for RangeSet {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> RangeSet {
        RangeSet::from_vec(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn insert_merges_overlap_and_adjacency() {
        let mut r = RangeSet::new();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.to_vec(), vec![(10, 20), (30, 40)]);
        r.insert(20, 30);
        assert_eq!(r.to_vec(), vec![(10, 40)]);
        r.insert(0, 5);
        r.insert(45, 50);
        r.insert(3, 47);
        assert_eq!(r.to_vec(), vec![(0, 50)]);
        r.insert(7, 7);
        r.insert(9, 2);
        assert_eq!(r.to_vec(), vec![(0, 50)]);
    }

    #[test]
    fn missing_and_prefix() {
        let r = RangeSet::from_vec(vec![(20, 30), (0, 10)]);
        assert_eq!(r.missing(40), vec![(10, 20), (30, 40)]);
        assert_eq!(r.missing(25), vec![(10, 20)]);
        assert_eq!(r.missing(0), vec![]);
        assert_eq!(r.contiguous_prefix(), 10);
        assert!(r.is_complete(10));
        assert!(!r.is_complete(11));
        assert!(RangeSet::new().is_complete(0));
        assert_eq!(RangeSet::from_vec(vec![(5, 9)]).contiguous_prefix(), 0);
        assert_eq!(r.missing_in(5, 25), vec![(10, 20)]);
    }

    #[test]
    fn contains_edges() {
        let r = RangeSet::from_vec(vec![(0, 10), (20, 30)]);
        assert!(r.contains(0, 10));
        assert!(r.contains(20, 30));
        assert!(!r.contains(9, 21));
        assert!(!r.contains(30, 31));
        assert!(r.contains(15, 15));
        assert_eq!(r.covered_len(), 20);
    }

    #[test]
    fn extremes() {
        let mut r = RangeSet::new();
        r.insert(u64::MAX - 1, u64::MAX);
        r.insert(0, 1);
        assert_eq!(r.to_vec(), vec![(0, 1), (u64::MAX - 1, u64::MAX)]);
        assert_eq!(r.missing(u64::MAX), vec![(1, u64::MAX - 1)]);
    }
}
