//! A set of half-open byte ranges (STUB — being written).
/// Set of disjoint, sorted, half-open byte ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}
