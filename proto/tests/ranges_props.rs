//! Property tests of `RangeSet` against a naive bitmap model: seeded random operation sequences, every
//! query compared after every insert.

use quicft_proto::ft::RangeSet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Byte-per-bit model of a range set over `[0, UNIVERSE)`.
struct Model {
    held: Vec<bool>,
}

impl Model {
    fn new(n: usize) -> Model {
        Model {
            held: vec![false; n],
        }
    }

    fn insert(&mut self, s: u64, e: u64) {
        for b in s..e {
            self.held[b as usize] = true;
        }
    }

    /// Maximal runs of held bytes (i.e. merged, non-adjacent ranges).
    fn ranges(&self) -> Vec<(u64, u64)> {
        runs(&self.held, true)
    }

    fn missing(&self, total: u64) -> Vec<(u64, u64)> {
        runs(&self.held[..total as usize], false)
    }

    fn contains(&self, s: u64, e: u64) -> bool {
        (s..e).all(|b| self.held[b as usize])
    }
}

fn runs(bits: &[bool], want: bool) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in bits.iter().enumerate() {
        match (b == want, start) {
            (true, None) => start = Some(i as u64),
            (false, Some(s)) => {
                out.push((s, i as u64));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, bits.len() as u64));
    }
    out
}

fn random_range(rng: &mut StdRng, universe: u64) -> (u64, u64) {
    let s = rng.gen_range(0..universe);
    // Mostly short ranges (many gaps), sometimes long ones (many merges), sometimes empty/inverted.
    let len = match rng.gen_range(0..10) {
        0 => 0,
        1 => rng.gen_range(0..universe),
        _ => rng.gen_range(1..12),
    };
    if rng.gen_range(0..20) == 0 {
        (s, s.saturating_sub(len))
    } else {
        (s, (s + len).min(universe))
    }
}

fn check(set: &RangeSet, model: &Model, rng: &mut StdRng, universe: u64) {
    let got = set.to_vec();
    assert_eq!(got, model.ranges());
    for w in got.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "ranges must be disjoint and non-adjacent: {got:?}"
        );
    }
    assert!(got.iter().all(|&(s, e)| s < e));
    assert_eq!(set.iter().collect::<Vec<_>>(), got);
    let covered = model.held.iter().filter(|&&b| b).count() as u64;
    assert_eq!(set.covered_len(), covered);
    let prefix = model.held.iter().take_while(|&&b| b).count() as u64;
    assert_eq!(set.contiguous_prefix(), prefix);
    for _ in 0..8 {
        let total = rng.gen_range(0..=universe);
        assert_eq!(set.missing(total), model.missing(total), "missing({total})");
        assert_eq!(set.is_complete(total), model.missing(total).is_empty());
        let (s, e) = random_range(rng, universe);
        assert_eq!(
            set.contains(s, e),
            model.contains(s, e),
            "contains({s},{e})"
        );
    }
    assert_eq!(&RangeSet::from_vec(got.clone()), set);
}

#[test]
fn insert_matches_bitmap_model() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let universe = rng.gen_range(1..200u64);
        let mut set = RangeSet::new();
        let mut model = Model::new(universe as usize);
        let ops = rng.gen_range(0..60);
        for _ in 0..ops {
            let (s, e) = random_range(&mut rng, universe);
            set.insert(s, e);
            model.insert(s, e);
            check(&set, &model, &mut rng, universe);
        }
        check(&set, &model, &mut rng, universe);
    }
}

#[test]
fn from_vec_equals_sequential_inserts() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(1_000_000 + seed);
        let universe = rng.gen_range(1..500u64);
        let input: Vec<(u64, u64)> = (0..rng.gen_range(0..40))
            .map(|_| random_range(&mut rng, universe))
            .collect();
        let mut by_insert = RangeSet::new();
        for &(s, e) in &input {
            by_insert.insert(s, e);
        }
        let from_vec = RangeSet::from_vec(input.clone());
        assert_eq!(by_insert, from_vec, "input {input:?}");
        let collected: RangeSet = input.into_iter().collect();
        assert_eq!(collected, from_vec);
    }
}

#[test]
fn missing_and_held_partition_the_file() {
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(2_000_000 + seed);
        let universe = rng.gen_range(1..300u64);
        let mut set = RangeSet::new();
        for _ in 0..rng.gen_range(0..30) {
            let (s, e) = random_range(&mut rng, universe);
            set.insert(s, e);
        }
        let total = rng.gen_range(0..=universe);
        let mut whole = set.clone();
        let missing = set.missing(total);
        for &(s, e) in &missing {
            assert!(s < e && e <= total);
            assert!(!set.contains(s, s + 1));
            whole.insert(s, e);
        }
        assert!(whole.is_complete(total));
        let held_in_total: u64 = set
            .iter()
            .map(|(s, e)| e.min(total).saturating_sub(s))
            .sum();
        let missing_len: u64 = missing.iter().map(|(s, e)| e - s).sum();
        assert_eq!(held_in_total + missing_len, total);
    }
}
