//! The weights through a run, for the classroom's "how it learned": a snapshot whenever
//! `every` steps have passed since the last one kept, thinned as the run grows (every other
//! one dropped, the first and the latest kept, and the spacing doubled), so at most `max` are
//! kept, spread evenly over the run however long it trains.

/// Snapshots a run keeps: LeNet's 62,006 weights are 248 KB each, so 8 MB a run.
pub const MAX_SNAPSHOTS: usize = 32;

/// The most a timeline's weights may take, in the worker and in the browser's store: a wide
/// network keeps fewer snapshots (the widest, 13 MiB of weights, keeps 4 instead of 32:
/// 54 MiB, not 430).
pub const TIMELINE_BYTES: usize = 64 << 20;

/// Snapshots a timeline of a network of `params` weights keeps: MAX_SNAPSHOTS, fewer when
/// they would pass TIMELINE_BYTES, and never under 3 (the first, one between, the latest).
pub fn max_snapshots(params: usize) -> usize {
    (TIMELINE_BYTES / (4 * params.max(1))).clamp(3, MAX_SNAPSHOTS)
}

/// The packed parameters [P] of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub step: u64,
    pub params: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// Steps at least between two snapshots (grows as the timeline is thinned).
    pub every: u64,
    pub max: usize,
    pub snaps: Vec<Snapshot>,
}

impl Timeline {
    pub fn new(max: usize) -> Timeline {
        assert!(max >= 3, "the first, the latest and one between");
        Timeline { every: 1, max, snaps: Vec::new() }
    }

    /// Offer the weights of `step`: kept (true) when it is the first, or `every` steps past the
    /// last kept one. A step at or before the last is refused (a run goes forward), and so are
    /// weights that are not finite (a diverged step's: nothing to show, nor to store).
    pub fn offer(&mut self, step: u64, params: &[f32]) -> bool {
        if params.iter().any(|v| !v.is_finite()) {
            return false;
        }
        if let Some(last) = self.snaps.last() {
            if step < last.step + self.every.max(1) {
                return false;
            }
        }
        self.snaps.push(Snapshot { step, params: params.to_vec() });
        if self.snaps.len() > self.max {
            self.thin();
        }
        true
    }

    /// Drop every other snapshot (the first and the latest stay), and from then on keep one
    /// each (smallest gap now) steps.
    fn thin(&mut self) {
        let last = self.snaps.len() - 1;
        let mut i = 0;
        self.snaps.retain(|_| {
            let keep = i % 2 == 0 || i == last;
            i += 1;
            keep
        });
        self.every = self.snaps.windows(2).map(|w| w[1].step - w[0].step).min().unwrap_or(1).max(1);
    }

    /// A timeline from stored snapshots (a resumed run's): in step order, the spacing their
    /// smallest gap, thinned to `max` if there are more.
    pub fn from_snapshots(max: usize, mut snaps: Vec<Snapshot>) -> Timeline {
        snaps.sort_by_key(|s| s.step);
        snaps.dedup_by_key(|s| s.step);
        let mut t = Timeline::new(max);
        t.snaps = snaps;
        while t.snaps.len() > t.max {
            t.thin();
        }
        t.every = t.snaps.windows(2).map(|w| w[1].step - w[0].step).min().unwrap_or(1).max(1);
        t
    }

    /// Back to `step` (the resume point after a divergence or a lost device): the snapshots
    /// after it are dropped, so the steps trained again are kept as they come. True when one
    /// was dropped.
    pub fn roll_back(&mut self, step: u64) -> bool {
        let before = self.snaps.len();
        self.snaps.retain(|s| s.step <= step);
        self.snaps.len() < before
    }

    /// The steps kept, in order.
    pub fn steps(&self) -> Vec<u64> {
        self.snaps.iter().map(|s| s.step).collect()
    }

    /// The snapshot of `step`, if kept.
    pub fn at(&self, step: u64) -> Option<&Snapshot> {
        self.snaps.iter().find(|s| s.step == step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_at_most_max_snapshots_spread_evenly() {
        let mut t = Timeline::new(8);
        for step in (0..=10_000u64).step_by(25) {
            t.offer(step, &[step as f32]);
            assert!(t.snaps.len() <= 8);
            assert_eq!(t.snaps[0].step, 0, "the first stays");
            assert!(t.snaps.iter().all(|s| s.params == vec![s.step as f32]), "each snapshot holds its own step's weights");
        }
        let steps = t.steps();
        println!("kept {steps:?}, every {}", t.every);
        // Spread over the run: the gaps are one spacing, the latest's at most twice it.
        let gaps: Vec<u64> = steps.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[..gaps.len() - 1].iter().all(|&g| g == t.every), "{gaps:?}");
        assert!(*steps.last().unwrap() >= 10_000 - 2 * t.every);
        assert!(steps.len() >= 4 && t.every >= 1000, "{steps:?}");
        // A step not past the spacing, or going back, is refused.
        let last = *steps.last().unwrap();
        assert!(!t.offer(last, &[0.0]) && !t.offer(last + t.every - 1, &[0.0]));
        assert!(t.offer(last + t.every, &[1.0]));
        assert_eq!(t.at(last + t.every).unwrap().params, vec![1.0]);
        assert!(t.at(1).is_none());
    }

    #[test]
    fn a_rolled_back_timeline_takes_the_steps_trained_again_and_no_weights_that_are_not_finite() {
        let mut t = Timeline::new(8);
        for step in [0, 10, 20, 30] {
            assert!(t.offer(step, &[step as f32]));
        }
        assert!(!t.offer(40, &[f32::NAN]) && !t.offer(40, &[f32::INFINITY, 1.0]), "a diverged step's weights are not kept");
        assert!(t.roll_back(15), "back to step 15: 20 and 30 go");
        assert_eq!(t.steps(), vec![0, 10]);
        assert!(!t.roll_back(15), "nothing more to drop");
        assert!(t.offer(20, &[2.5]), "the steps trained again are kept as they come");
        assert_eq!(t.at(20).unwrap().params, vec![2.5], "the new weights of step 20, not the old");
    }

    #[test]
    fn a_wide_networks_timeline_keeps_fewer_snapshots_within_its_bytes() {
        let lenet = crate::model::Layout::lenet().total;
        let widest = crate::model::Layout::new(crate::model::Arch { c1: 256, c2: 256, f1: 256, f2: 256 }).total;
        assert_eq!(max_snapshots(lenet), MAX_SNAPSHOTS);
        let n = max_snapshots(widest);
        println!("the widest network ({widest} weights) keeps {n} snapshots: {} MiB", (n * widest * 4) >> 20);
        assert!(n >= 3 && n * widest * 4 <= TIMELINE_BYTES && (n + 1) * widest * 4 > TIMELINE_BYTES);
        assert_eq!(max_snapshots(usize::MAX / 8), 3);
    }

    #[test]
    fn a_stored_timeline_comes_back_in_order_with_its_spacing() {
        let snap = |step: u64| Snapshot { step, params: vec![step as f32] };
        let t = Timeline::from_snapshots(8, vec![snap(300), snap(0), snap(100), snap(200), snap(100)]);
        assert_eq!((t.steps(), t.every), (vec![0, 100, 200, 300], 100));
        let mut t2 = t.clone();
        assert!(!t2.offer(350, &[0.0]) && t2.offer(400, &[4.0]), "it goes on at its spacing");
        let many = Timeline::from_snapshots(4, (0..10).map(|i| snap(i * 10)).collect());
        assert!(many.snaps.len() <= 4 && many.snaps[0].step == 0 && *many.steps().last().unwrap() == 90, "{:?}", many.steps());
        assert!(Timeline::from_snapshots(4, vec![]).snaps.is_empty());
    }
}
