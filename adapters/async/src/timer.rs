//! The driver's time: what `now` is, and how to wait, for any runtime.

use std::future::Future;
use std::time::Instant;

/// The clock and the sleep of the runtime the driver runs on.
///
/// The driver passes [`Timer::now`] to every `poll_action` and `handle_*` call and awaits
/// [`Timer::sleep_until`] when the upload says `Wait`. [`TokioTimer`] is tokio's (the `tokio`
/// feature); for smol, `async_io::Timer::at(deadline)` is a one-line implementation; tests
/// use a timer that only pretends to sleep.
pub trait Timer {
    /// The current instant.
    fn now(&mut self) -> Instant;

    /// Completes at `deadline` (at once if it has passed). The driver then polls the upload
    /// again with [`Timer::now`]. Dropping the future must cancel the sleep.
    fn sleep_until(&mut self, deadline: Instant) -> impl Future<Output = ()>;
}

impl<T: Timer + ?Sized> Timer for &mut T {
    fn now(&mut self) -> Instant {
        (**self).now()
    }

    fn sleep_until(&mut self, deadline: Instant) -> impl Future<Output = ()> {
        (**self).sleep_until(deadline)
    }
}

/// Tokio's clock and sleep. Needs a tokio runtime with time enabled
/// (`Builder::enable_time`, or `#[tokio::main]`).
///
/// Its `now` is tokio's clock, so a test runtime with paused time (`start_paused`) skips the
/// upload's waits.
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioTimer;

#[cfg(feature = "tokio")]
impl Timer for TokioTimer {
    fn now(&mut self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&mut self, deadline: Instant) -> impl Future<Output = ()> {
        tokio::time::sleep_until(deadline.into())
    }
}
