//! How long the GPU engine's work takes, so that each readback gets a deadline sized by the work
//! queued before it: DEADLINE_FLOOR plus DEADLINE_FACTOR times the time that work should take at
//! the engine's pace (seconds per training step, the slowest recent chunk's, decaying slowly
//! toward faster ones). A slow adapter (lavapipe at batch 256: about a second a step) gets long
//! deadlines, a fast one short ones; a hung one is found out either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// No readback's deadline is shorter (a first submission also compiles, a tab may be busy).
pub const DEADLINE_FLOOR: Duration = Duration::from_secs(10);
/// How many times its expected time a readback may take.
pub const DEADLINE_FACTOR: f64 = 20.0;
/// Seconds per step assumed before any chunk has been timed (a software adapter's pace).
const FIRST_PACE: f64 = 1.0;

pub struct Pace {
    secs_per_step: Mutex<f64>,
    /// Steps submitted since the last metrics readback was queued.
    queued: AtomicUsize,
    /// Steps submitted whose metrics have not come back.
    in_flight: AtomicUsize,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { secs_per_step: Mutex::new(FIRST_PACE), queued: AtomicUsize::new(0), in_flight: AtomicUsize::new(0) }
    }
}

impl Pace {
    /// `steps` training steps were submitted.
    pub fn submitted(&self, steps: usize) {
        self.queued.fetch_add(steps, Ordering::Relaxed);
        self.in_flight.fetch_add(steps, Ordering::Relaxed);
    }

    /// A metrics readback is queued: the steps it covers.
    pub fn take_queued(&self) -> usize {
        self.queued.swap(0, Ordering::Relaxed)
    }

    /// The deadline of a readback queued now: the steps still in flight before it, plus `extra`
    /// steps' worth of other work (an evaluation).
    pub fn deadline(&self, extra: f64) -> Duration {
        let steps = self.in_flight.load(Ordering::Relaxed) as f64 + extra;
        DEADLINE_FLOOR + Duration::from_secs_f64(DEADLINE_FACTOR * steps * *self.secs_per_step.lock().unwrap())
    }

    /// The metrics of `steps` steps came back `secs` after they were queued (with a chunk in
    /// flight before them, an overestimate: deadlines err long).
    pub fn done(&self, steps: usize, secs: f64) {
        self.in_flight.fetch_sub(steps.min(self.in_flight.load(Ordering::Relaxed)), Ordering::Relaxed);
        if steps > 0 {
            let mut p = self.secs_per_step.lock().unwrap();
            *p = (secs / steps as f64).max(0.8 * *p);
        }
    }

    /// A new run: nothing in flight is waited for any more.
    pub fn reset(&self) {
        self.queued.store(0, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_follows_the_work_queued_and_the_pace() {
        let p = Pace::default();
        assert_eq!(p.deadline(0.0), DEADLINE_FLOOR, "nothing queued: the floor");
        p.submitted(100);
        // 100 steps at the first guess of 1 s each, 20 times over
        assert_eq!(p.deadline(0.0), DEADLINE_FLOOR + Duration::from_secs(2000));
        assert_eq!(p.take_queued(), 100);
        p.done(100, 2.0); // 20 ms a step
        assert_eq!(p.deadline(0.0), DEADLINE_FLOOR, "its metrics came back: nothing in flight");
        p.submitted(50);
        // the pace decays toward the measured one (0.8 of the last, or the measured if slower)
        assert_eq!(p.deadline(0.0), DEADLINE_FLOOR + Duration::from_secs_f64(20.0 * 50.0 * 0.8));
        p.done(50, 50.0); // 1 s a step: slower at once
        p.submitted(10);
        assert_eq!(p.deadline(5.0), DEADLINE_FLOOR + Duration::from_secs_f64(20.0 * 15.0));
        p.reset();
        assert_eq!((p.take_queued(), p.deadline(0.0)), (0, DEADLINE_FLOOR));
    }
}
