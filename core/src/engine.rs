//! The request engine every protocol runs on: request ids, the requests in flight (any number,
//! answered in any order), the wait, retries with backoff, cancellation, the sticky outcome and
//! the counters.
//!
//! A protocol keeps its own state as a value (an enum of phases) and decides, in one match,
//! what each answer means; the engine does the bookkeeping around it the same way for all of
//! them. Its polling rhythm:
//!
//! 1. [`Engine::poll_head`]: the sticky outcome, then a wait not yet over;
//! 2. the protocol's own next step: a read it needs, [`Engine::send`] a request of its kind,
//!    or nothing ([`Engine::idle`]: `Idle` while requests are in flight);
//! 3. on input, [`Engine::take`] the request the outcome is for (an id that is not in flight,
//!    or input after the end, is a [`UsageError`] and changes nothing), then the protocol's
//!    transition, which calls [`Engine::retry`], [`Engine::progress`] or [`Engine::finish`].

use std::time::{Duration, Instant};

use crate::action::{Action, RequestId, Stats};
use crate::error::{Error, RetryCause, UsageError};
use crate::retry::{Attempt, Backoff, RetryPolicy, Retrying};

/// A request handed out and not yet answered.
#[derive(Clone, Debug)]
pub(crate) struct Flight<K> {
    /// Its id.
    pub(crate) id: RequestId,
    /// What it is, in the protocol's terms.
    pub(crate) kind: K,
    /// When it was handed out (to measure a rate, T4).
    pub(crate) handed_out: Instant,
    /// The source bytes its body carries.
    pub(crate) source_len: u64,
}

/// The bookkeeping of one upload; `K` is the protocol's request kind, `T` its output.
#[derive(Debug)]
pub(crate) struct Engine<K, T> {
    next_id: u64,
    /// Ids grow by this much: an upload nested in another hands out ids of its own parity, so
    /// the outer one routes outcomes without translating ids.
    id_step: u64,
    flights: Vec<Flight<K>>,
    wait_until: Option<Instant>,
    outcome: Option<Result<T, Error>>,
    cancel_requested: bool,
    backoff: Backoff,
    stats: Stats,
}

impl<K: Clone, T: Clone> Engine<K, T> {
    /// An engine retrying by `policy`.
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Engine {
            next_id: 0,
            id_step: 1,
            flights: Vec::new(),
            wait_until: None,
            outcome: None,
            cancel_requested: false,
            backoff: Backoff::new(policy),
            stats: Stats::default(),
        }
    }

    /// Hands out ids `first`, `first + step`, … from now on (for uploads nested in another:
    /// the outer takes the even ids, the inner the odd ones).
    pub(crate) fn use_ids(&mut self, first: u64, step: u64) {
        self.next_id = first;
        self.id_step = step.max(1);
    }

    /// The retry policy.
    pub(crate) fn policy(&self) -> &RetryPolicy {
        self.backoff.policy()
    }

    /// The common head of every poll: the sticky outcome, then a wait that is not over yet
    /// (a wait that is over is cleared). `None`: the protocol decides what comes next.
    pub(crate) fn poll_head(&mut self, now: Instant) -> Option<Action<T>> {
        self.backoff.observe_start(now);
        if let Some(outcome) = &self.outcome {
            return Some(Action::Done(outcome.clone()));
        }
        match self.wait_until {
            Some(until) if now < until => Some(Action::Wait(until)),
            Some(_) => {
                self.wait_until = None;
                None
            }
            None => None,
        }
    }

    /// What a poll with nothing to hand out answers: `Idle` while requests are in flight.
    /// With none in flight and nothing due the protocol is stuck, which is a bug of its own:
    /// it ends rather than loop.
    pub(crate) fn idle(&mut self) -> Action<T> {
        if self.flights.is_empty() {
            self.finish(Err(Error::Internal(
                "the upload has nothing left to do but did not end",
            )));
            return match &self.outcome {
                Some(outcome) => Action::Done(outcome.clone()),
                None => Action::Idle,
            };
        }
        Action::Idle
    }

    /// Records a request of `kind` carrying `source_len` source bytes as handed out, and
    /// returns its fresh id (the protocol builds the request under it).
    pub(crate) fn hand_out(&mut self, now: Instant, kind: K, source_len: u64) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id = self.next_id.saturating_add(self.id_step);
        self.stats.requests += 1;
        self.stats.bytes_sent += source_len;
        self.flights.push(Flight {
            id,
            kind,
            handed_out: now,
            source_len,
        });
        id
    }

    /// The request `id` is answered (or failed): removes it from the requests in flight.
    ///
    /// # Errors
    /// [`UsageError::Finished`] after the end, [`UsageError::UnknownRequest`] when `id` is not
    /// in flight; nothing changes then.
    pub(crate) fn take(&mut self, id: RequestId) -> Result<Flight<K>, UsageError> {
        if self.outcome.is_some() {
            return Err(UsageError::Finished);
        }
        let at = self
            .flights
            .iter()
            .position(|f| f.id == id)
            .ok_or(UsageError::UnknownRequest(id.0))?;
        Ok(self.flights.remove(at))
    }

    /// The request `id` if it is in flight (checked like [`Engine::take`], but kept).
    pub(crate) fn flight(&self, id: RequestId) -> Result<&Flight<K>, UsageError> {
        if self.outcome.is_some() {
            return Err(UsageError::Finished);
        }
        self.flights
            .iter()
            .find(|f| f.id == id)
            .ok_or(UsageError::UnknownRequest(id.0))
    }

    /// The requests in flight.
    pub(crate) fn flights(&self) -> &[Flight<K>] {
        &self.flights
    }

    /// Whether the upload is over.
    pub(crate) fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The outcome, once over.
    pub(crate) fn outcome(&self) -> Option<&Result<T, Error>> {
        self.outcome.as_ref()
    }

    /// Ends the upload; every later poll repeats `outcome`. Requests still in flight are
    /// forgotten (their outcomes are refused as input after the end).
    pub(crate) fn finish(&mut self, outcome: Result<T, Error>) {
        if self.outcome.is_none() {
            self.flights.clear();
            self.wait_until = None;
            self.outcome = Some(outcome);
        }
    }

    /// A retryable failure of a request to `attempt`: waits by the backoff (the protocol then
    /// decides what is sent after the wait), or ends the upload when the budget or a deadline
    /// is spent. Returns whether the upload goes on.
    pub(crate) fn retry(
        &mut self,
        now: Instant,
        cause: RetryCause,
        after: Option<Duration>,
        attempt: Attempt,
    ) -> bool {
        match self.backoff.failure(now, cause, after, attempt) {
            Ok(until) => {
                self.wait_at_least(until);
                true
            }
            Err(e) => {
                self.finish(Err(e));
                false
            }
        }
    }

    /// Nothing new is sent before `until` (a processing delay, or a retry of another request
    /// in flight): the later of the waits holds.
    pub(crate) fn wait_at_least(&mut self, until: Instant) {
        self.wait_until = Some(self.wait_until.map_or(until, |w| w.max(until)));
    }

    /// Drops a pending wait (cancellation does not wait out a backoff).
    pub(crate) fn clear_wait(&mut self) {
        self.wait_until = None;
    }

    /// The pending wait, if any.
    pub(crate) fn wait_until(&self) -> Option<Instant> {
        self.wait_until
    }

    /// The server stored something new: the run of failures is over.
    pub(crate) fn progress(&mut self) {
        self.backoff.progress();
    }

    /// The last retry scheduled.
    pub(crate) fn last_retry(&self) -> Option<&Retrying> {
        self.backoff.last_retry()
    }

    /// Marks the upload to be cancelled (see `Upload::cancel`); ignored once over.
    pub(crate) fn request_cancel(&mut self) {
        if self.outcome.is_none() {
            self.cancel_requested = true;
        }
    }

    /// Whether a cancel was asked for.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// Withdraws a cancel (a completion arrived first).
    pub(crate) fn withdraw_cancel(&mut self) {
        self.cancel_requested = false;
    }

    /// The counters, for `Upload::stats`.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            retries: self.backoff.total_retries(),
            ..self.stats
        }
    }

    /// The counters the protocol keeps itself (where the server's first answer left a resume,
    /// status polls).
    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// Source bytes in requests not answered yet, for `Upload::progress`.
    pub(crate) fn in_flight_bytes(&self) -> u64 {
        self.flights.iter().map(|f| f.source_len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each request is handed out once, under a fresh id; outcomes come back in any order,
    // and an id not in flight (twice, or never handed out) is refused without effect.
    #[test]
    fn requests_are_handed_out_once_and_taken_back_in_any_order() {
        let now = Instant::now();
        let mut e: Engine<u32, ()> = Engine::new(RetryPolicy::default());
        let ids: Vec<RequestId> = (0..3).map(|k| e.hand_out(now, k, 10)).collect();
        assert_eq!(ids, [RequestId(0), RequestId(1), RequestId(2)]);
        assert_eq!(e.flights().len(), 3);
        assert_eq!(e.in_flight_bytes(), 30);
        assert_eq!(e.take(ids[1]).unwrap().kind, 1);
        assert_eq!(e.take(ids[1]).unwrap_err(), UsageError::UnknownRequest(1));
        assert_eq!(e.take(ids[0]).unwrap().kind, 0);
        assert!(matches!(e.idle(), Action::Idle));
        assert_eq!(e.take(ids[2]).unwrap().kind, 2);
        assert_eq!(
            e.take(RequestId(9)).unwrap_err(),
            UsageError::UnknownRequest(9)
        );
        assert_eq!(e.stats().requests, 3);
        assert_eq!(e.stats().bytes_sent, 30);
    }

    // Failure is sticky: after the outcome every poll repeats it and input is refused.
    #[test]
    fn the_outcome_is_sticky() {
        let now = Instant::now();
        let mut e: Engine<u32, u8> = Engine::new(RetryPolicy::default());
        let id = e.hand_out(now, 7, 0);
        e.finish(Err(Error::Cancelled));
        e.finish(Ok(1));
        assert!(matches!(
            e.poll_head(now),
            Some(Action::Done(Err(Error::Cancelled)))
        ));
        assert_eq!(e.take(id).unwrap_err(), UsageError::Finished);
    }

    // A wait holds until its instant, and the later of two waits wins.
    #[test]
    fn waits_hold_until_their_instant() {
        let now = Instant::now();
        let mut e: Engine<u32, ()> = Engine::new(RetryPolicy::default());
        e.wait_at_least(now + Duration::from_secs(5));
        e.wait_at_least(now + Duration::from_secs(2));
        assert!(
            matches!(e.poll_head(now), Some(Action::Wait(t)) if t == now + Duration::from_secs(5))
        );
        assert!(e.poll_head(now + Duration::from_secs(5)).is_none());
        assert!(e.wait_until().is_none());
    }

    // A protocol with nothing in flight and nothing to do ends instead of looping.
    #[test]
    fn idle_with_nothing_in_flight_ends() {
        let mut e: Engine<u32, ()> = Engine::new(RetryPolicy::default());
        assert!(matches!(e.idle(), Action::Done(Err(Error::Internal(_)))));
        assert!(e.is_done());
    }
}
