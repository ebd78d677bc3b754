//! The driver's time: what `now` is, and how to wait.

use std::time::Instant;

/// The driver's time: what `now` is, and how to wait. [`SystemClock`] is the real one; tests
/// inject a clock that only pretends to sleep.
pub trait Clock {
    /// The current instant, passed to every `poll_action` and `handle_*` call.
    fn now(&mut self) -> Instant;
    /// Blocks until `deadline` (returns at once if it has passed). The driver then polls
    /// again with [`Clock::now`].
    fn sleep_until(&mut self, deadline: Instant);
}

/// The real clock: [`Instant::now`] and [`std::thread::sleep`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }
}
