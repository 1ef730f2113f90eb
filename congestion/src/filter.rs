//! Windowed maximum over round trips, for the bottleneck-bandwidth estimate.

use std::collections::VecDeque;

/// The largest value seen in the last `window` rounds.
///
/// One entry per round (the round's maximum), so memory is bounded by `window + 1` entries whatever
/// the sample rate. Rounds are counted by the caller: the controller advances them only for rounds
/// that were not application-limited, so an idle or telemetry-only period does not age out the
/// bandwidth the link had during the last upload.
#[derive(Debug, Clone)]
pub(crate) struct MaxFilter {
    window: u64,
    /// `(round, max of that round)`, oldest first, rounds strictly increasing.
    entries: VecDeque<(u64, u64)>,
}

impl MaxFilter {
    pub(crate) fn new(window: u64) -> Self {
        MaxFilter {
            window: window.max(1),
            entries: VecDeque::new(),
        }
    }

    /// The current estimate; 0 before the first sample.
    pub(crate) fn get(&self) -> u64 {
        self.entries.iter().map(|&(_, v)| v).max().unwrap_or(0)
    }

    pub(crate) fn update(&mut self, round: u64, value: u64) {
        self.expire(round);
        match self.entries.back_mut() {
            Some((r, v)) if *r == round => *v = (*v).max(value),
            _ => self.entries.push_back((round, value)),
        }
    }

    /// Forgets rounds that fell out of the window ending at `round`.
    pub(crate) fn expire(&mut self, round: u64) {
        while let Some(&(r, _)) = self.entries.front() {
            if r.saturating_add(self.window) <= round {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Replaces everything with one measurement (after a congestion verdict: older, higher samples
    /// describe a link that no longer exists).
    pub(crate) fn reset(&mut self, round: u64, value: u64) {
        self.entries.clear();
        self.entries.push_back((round, value));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::MaxFilter;

    #[test]
    fn keeps_the_max_of_the_window_and_forgets_older_rounds() {
        let mut f = MaxFilter::new(3);
        assert_eq!(f.get(), 0);
        f.update(0, 10);
        f.update(0, 7);
        f.update(1, 5);
        f.update(2, 6);
        assert_eq!(f.get(), 10);
        f.update(3, 4); // round 0 falls out
        assert_eq!(f.get(), 6);
        f.expire(6);
        assert_eq!(f.get(), 0);
    }

    #[test]
    fn reset_replaces_history() {
        let mut f = MaxFilter::new(10);
        f.update(0, 100);
        f.reset(1, 40);
        assert_eq!(f.get(), 40);
        f.update(1, 30);
        assert_eq!(f.get(), 40);
        f.clear();
        assert_eq!(f.get(), 0);
    }
}
