//! Retry policy as plain data (G8, T6), and the backoff bookkeeping every protocol shares.
//!
//! The core decides when to retry and for how long to wait; the driver only sleeps until the
//! instant the core returns in [`crate::Action::Wait`]. Jitter comes from a seeded generator,
//! so a run is reproducible from the seed.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};

use crate::error::{Endpoint, Error, RetryCause};

/// Which failures are retried, how long to wait between attempts, and when to give up.
///
/// Plain data: build it, change fields, hand it to an upload's config. The defaults follow
/// G8: 408, 429, 500, 502, 503, 504 and every transport failure are retried, the wait starts
/// at 1 s and doubles up to 32 s, plus up to 1 s of jitter, and `Retry-After` is honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Statuses that are retried (after a status query, where the protocol has one).
    pub retry_statuses: Vec<u16>,
    /// Whether transport failures (connect, reset, timeout, truncated response) are retried.
    pub retry_transport: bool,
    /// The wait after the first failure.
    pub initial_backoff: Duration,
    /// The factor the wait grows by after each further failure.
    pub multiplier: u32,
    /// The longest wait the backoff grows to (before jitter).
    pub max_backoff: Duration,
    /// Up to this much random time is added to each wait, so clients do not retry in step.
    pub jitter: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// How many failed attempts in a row (without the server storing anything new) end the
    /// upload with [`Error::RetriesExhausted`].
    pub max_attempts: u32,
    /// How long a run of failed attempts may last, from its first failure; a wait that would
    /// end later gives up instead.
    pub retry_deadline: Duration,
    /// How long the whole upload may take from its first poll, if limited.
    pub total_deadline: Option<Duration>,
    /// Seed of the jitter generator.
    pub seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_statuses: vec![408, 429, 500, 502, 503, 504],
            retry_transport: true,
            initial_backoff: Duration::from_secs(1),
            multiplier: 2,
            max_backoff: Duration::from_secs(32),
            jitter: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(3600),
            max_attempts: 10,
            retry_deadline: Duration::from_secs(600),
            total_deadline: None,
            seed: 0x5EED_0F2E_5CAB_1E00,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries: the first retryable failure ends the upload.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        }
    }

    /// Sets the jitter seed (builder style). Drivers seed from their own randomness so that
    /// many clients do not retry in step; tests seed with a constant to be reproducible.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether a response with `status` is retried under this policy.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.retry_statuses.contains(&status.as_u16())
    }
}

/// A retry the upload has scheduled: what failed, where, and when the next attempt goes out.
/// Drivers show it (`Upload::last_retry`) when the wait it causes begins, so that every retry
/// is visible: "HTTP 503 on bytes 8–16 MiB; retrying in 4.2 s, attempt 2 of 11".
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retrying {
    /// What failed.
    pub cause: RetryCause,
    /// The server the failed request went to.
    pub endpoint: Option<Endpoint>,
    /// The source bytes the failed request carried, if any.
    pub source: Option<Range<u64>>,
    /// The number of the attempt that comes next, within this run of failures (2 is the first
    /// retry).
    pub attempt: u32,
    /// The most attempts the run may take: the first try plus the policy's retries.
    pub max_attempts: u32,
    /// How long the upload waits before that attempt.
    pub wait: Duration,
    /// When the wait ends (what the upload's `Action::Wait` says).
    pub until: Instant,
}

impl Retrying {
    /// What failed, in words, naming the server: "HTTP 503 Service Unavailable from
    /// storage.example", "connection to storage.example reset".
    pub fn cause_in_words(&self) -> String {
        crate::error::RetryCauseDisplay(&self.cause, self.endpoint.as_ref()).to_string()
    }
}

/// What a failed request was: its server and the source bytes it carried (for errors and for
/// [`Retrying`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) source: Option<Range<u64>>,
}

impl Attempt {
    /// A request to `uri` carrying the source bytes `source` (none when empty).
    pub(crate) fn new(uri: &http::Uri, source: Option<Range<u64>>) -> Self {
        Attempt {
            endpoint: Endpoint::of(uri),
            source: source.filter(|r| r.start < r.end),
        }
    }
}

/// A duration in words for messages: "900 ms", "4.2 s", "15 min", "2 h 5 min".
pub(crate) struct Wait(pub(crate) Duration);

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if d < Duration::from_secs(1) {
            write!(f, "{} ms", d.as_millis())
        } else if secs < 60 {
            write!(f, "{:.1} s", d.as_secs_f64())
        } else if secs < 3600 {
            match secs % 60 {
                0 => write!(f, "{} min", secs / 60),
                s => write!(f, "{} min {s} s", secs / 60),
            }
        } else {
            match (secs % 3600) / 60 {
                0 => write!(f, "{} h", secs / 3600),
                m => write!(f, "{} h {m} min", secs / 3600),
            }
        }
    }
}

/// Backoff bookkeeping for one upload: counts failures since the last progress and turns each
/// failure into the instant to retry at, or into the final error.
///
/// Every upload retries through one of these. A driver's own requests outside an upload (the
/// command-line tool's download of compliance results) use one too, through
/// [`Backoff::retry`], so that every retry in the project follows the same policy.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    rng: u64,
    started: Option<Instant>,
    run_started: Option<Instant>,
    failures: u32,
    /// Failures in this run that waiting will not mend (`TransportFailure::is_lasting`).
    lasting: u32,
    total_retries: u64,
    last: Option<Retrying>,
}

impl Backoff {
    /// Bookkeeping for requests retried by `policy`, before their first failure.
    pub fn new(policy: RetryPolicy) -> Self {
        let rng = policy.seed;
        Backoff {
            policy,
            rng,
            started: None,
            run_started: None,
            failures: 0,
            lasting: 0,
            total_retries: 0,
            last: None,
        }
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Records the first time the upload was polled (the start of the total deadline).
    pub(crate) fn observe_start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// How many retries were scheduled over the whole upload.
    pub(crate) fn total_retries(&self) -> u64 {
        self.total_retries
    }

    /// The last retry scheduled, if any.
    pub(crate) fn last_retry(&self) -> Option<&Retrying> {
        self.last.as_ref()
    }

    /// The server stored something new: the run of failures is over.
    pub(crate) fn progress(&mut self) {
        self.failures = 0;
        self.lasting = 0;
        self.run_started = None;
    }

    /// A request to `uri` failed at `now` with `cause` (a status the policy retries, see
    /// [`RetryPolicy::retries_status`], or a transport failure), the server asking to wait
    /// `retry_after`: the retry to make (sleep until its `until`, then send again), or the
    /// error that ends the requests (the budget or a deadline is spent).
    ///
    /// # Errors
    /// [`Error::RetriesExhausted`], [`Error::WaitBeyondDeadline`] or [`Error::Transport`].
    pub fn retry(
        &mut self,
        now: Instant,
        cause: RetryCause,
        retry_after: Option<Duration>,
        uri: &http::Uri,
    ) -> Result<Retrying, Error> {
        self.observe_start(now);
        self.failure(now, cause, retry_after, Attempt::new(uri, None))?;
        self.last
            .clone()
            .ok_or(Error::Internal("a retry was scheduled but not recorded"))
    }

    /// A retryable failure of the request `attempt` happened at `now`. Returns when to try
    /// again, or the error that ends the upload: the budget or a deadline is spent, the server
    /// asked to wait past the deadline, or a failure that waiting will not mend came twice.
    pub(crate) fn failure(
        &mut self,
        now: Instant,
        cause: RetryCause,
        retry_after: Option<Duration>,
        attempt: Attempt,
    ) -> Result<Instant, Error> {
        // A policy that does not retry transport failures ends the upload at the first.
        if let RetryCause::Transport(failure) = cause
            && !self.policy.retry_transport
        {
            return Err(Error::Transport {
                failure,
                endpoint: attempt.endpoint,
            });
        }
        self.failures = self.failures.saturating_add(1);
        let run_started = *self.run_started.get_or_insert(now);
        let exhausted = Error::RetriesExhausted {
            attempts: self.failures,
            last: cause,
            endpoint: attempt.endpoint.clone(),
        };
        if self.failures > self.policy.max_attempts {
            return Err(exhausted);
        }
        let mut delay = self.backoff(self.failures);
        if let RetryCause::Transport(failure) = cause
            && failure.is_lasting()
        {
            // An unresolvable name or an untrusted certificate: one quick retry (a
            // resolver or a network may have hiccuped), then the upload ends.
            self.lasting += 1;
            if self.lasting > 1 {
                return Err(Error::Transport {
                    failure,
                    endpoint: attempt.endpoint,
                });
            }
            delay = delay.min(
                self.policy
                    .initial_backoff
                    .saturating_add(self.policy.jitter),
            );
        }
        let server_wait = retry_after.map(|after| after.min(self.policy.max_retry_after));
        if let Some(wait) = server_wait {
            delay = delay.max(wait);
        }
        let until = now.checked_add(delay).ok_or_else(|| exhausted.clone())?;
        let run_deadline = run_started.checked_add(self.policy.retry_deadline);
        let total_deadline = match (self.policy.total_deadline, self.started) {
            (Some(total), Some(started)) => Some(started.checked_add(total)),
            _ => None,
        };
        let past_run = run_deadline.is_some_and(|d| until > d);
        let past_total = total_deadline.is_some_and(|d| d.is_none_or(|d| until > d));
        if past_run || past_total {
            // The server's own wait is what passes the deadline: say so (G8).
            if let (Some(after), true) = (retry_after, server_wait == Some(delay)) {
                let deadline = match (past_run, self.policy.total_deadline) {
                    (false, Some(total)) => total,
                    _ => self.policy.retry_deadline,
                };
                return Err(Error::WaitBeyondDeadline {
                    wait: after,
                    deadline,
                    last: cause,
                    endpoint: attempt.endpoint,
                });
            }
            return Err(exhausted);
        }
        self.total_retries += 1;
        self.last = Some(Retrying {
            cause,
            endpoint: attempt.endpoint,
            source: attempt.source,
            attempt: self.failures.saturating_add(1),
            max_attempts: self.policy.max_attempts.saturating_add(1),
            wait: delay,
            until,
        });
        Ok(until)
    }

    /// The wait before attempt `n + 1` after `n` failures: exponential, capped, plus jitter.
    fn backoff(&mut self, failures: u32) -> Duration {
        let p = &self.policy;
        let mut delay = p.initial_backoff;
        for _ in 1..failures {
            delay = delay.saturating_mul(p.multiplier);
            if delay >= p.max_backoff {
                break;
            }
        }
        delay = delay.min(p.max_backoff);
        let jitter_nanos = u64::try_from(p.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter_nanos == 0 {
            0
        } else {
            self.next_random() % jitter_nanos.saturating_add(1)
        };
        delay.saturating_add(Duration::from_nanos(extra))
    }

    /// splitmix64: small, fast, and good enough to spread retries.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Reads `Retry-After` from a response: delta-seconds, or an HTTP-date measured against the
/// response's own `Date` header (the core has no clock). `None` when absent or unusable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Some(secs) = crate::range::parse_decimal(value) {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let date = headers.get(http::header::DATE)?.to_str().ok()?;
    let now = httpdate::parse_http_date(date.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads Twitter's `x-rate-limit-reset` (the Unix time, in seconds, when the rate-limit window
/// resets; sent with 429, M5) as a wait, measured against the response's own `Date` header
/// (the core has no clock). `None` when either is absent or unusable; zero when the reset is
/// not after the `Date`.
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset = headers.get("x-rate-limit-reset")?.to_str().ok()?.trim();
    let reset = crate::range::parse_decimal(reset)?;
    let date = headers.get(http::header::DATE)?.to_str().ok()?;
    let now = httpdate::parse_http_date(date.trim()).ok()?;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_and_caps_g8() {
        let t0 = Instant::now();
        let mut b = Backoff::new(no_jitter());
        b.observe_start(t0);
        let waits: Vec<u64> = (0..8)
            .map(|_| {
                let until = b
                    .failure(t0, RetryCause::NoProgress, None, Attempt::default())
                    .unwrap();
                (until - t0).as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn budget_ends_in_retries_exhausted_and_progress_resets_it() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            max_attempts: 2,
            ..no_jitter()
        };
        let mut b = Backoff::new(policy);
        b.observe_start(t0);
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        );
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        );
        b.progress();
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        );
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        );
        let cause = RetryCause::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            b.failure(t0, cause, None, Attempt::default()),
            Err(Error::RetriesExhausted {
                attempts: 3,
                last: cause,
                endpoint: None,
            })
        );
    }

    #[test]
    fn a_drivers_own_request_retries_by_the_same_policy() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            max_attempts: 2,
            ..no_jitter()
        };
        let uri: http::Uri = "https://results.example/file?sig=secret".parse().unwrap();
        let cause = RetryCause::Status(StatusCode::SERVICE_UNAVAILABLE);
        let mut b = Backoff::new(policy);
        let first = b.retry(t0, cause, None, &uri).unwrap();
        assert_eq!((first.attempt, first.wait), (2, Duration::from_secs(1)));
        assert_eq!(first.until, t0 + Duration::from_secs(1));
        assert_eq!(first.endpoint.as_ref().unwrap().host, "results.example");
        let asked = b
            .retry(first.until, cause, Some(Duration::from_secs(5)), &uri)
            .unwrap();
        assert_eq!(
            asked.wait,
            Duration::from_secs(5),
            "Retry-After is honoured"
        );
        assert!(matches!(
            b.retry(asked.until, cause, None, &uri),
            Err(Error::RetriesExhausted { attempts: 3, .. })
        ));
    }

    #[test]
    fn retry_after_lengthens_the_wait_and_is_capped() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            max_retry_after: Duration::from_secs(100),
            ..no_jitter()
        };
        let mut b = Backoff::new(policy);
        b.observe_start(t0);
        let u = b
            .failure(
                t0,
                RetryCause::NoProgress,
                Some(Duration::from_secs(7)),
                Attempt::default(),
            )
            .unwrap();
        assert_eq!(u - t0, Duration::from_secs(7));
        let u = b
            .failure(
                t0,
                RetryCause::NoProgress,
                Some(Duration::from_secs(500)),
                Attempt::default(),
            )
            .unwrap();
        assert_eq!(u - t0, Duration::from_secs(100));
    }

    // G8: a Retry-After past the retry deadline ends the upload saying so, not as an
    // exhausted budget.
    #[test]
    fn a_server_wait_past_the_deadline_is_named() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            retry_deadline: Duration::from_secs(600),
            ..no_jitter()
        };
        let mut b = Backoff::new(policy);
        b.observe_start(t0);
        let cause = RetryCause::Status(StatusCode::TOO_MANY_REQUESTS);
        let asked = Duration::from_secs(900);
        match b.failure(t0, cause, Some(asked), Attempt::default()) {
            Err(Error::WaitBeyondDeadline {
                wait,
                deadline,
                last,
                ..
            }) => {
                assert_eq!(
                    (wait, deadline, last),
                    (asked, Duration::from_secs(600), cause)
                );
            }
            other => panic!("expected WaitBeyondDeadline, got {other:?}"),
        }
        // Within the deadline, the same wait is honoured.
        let policy = RetryPolicy {
            retry_deadline: Duration::from_secs(1200),
            ..no_jitter()
        };
        let mut b = Backoff::new(policy);
        b.observe_start(t0);
        let until = b
            .failure(t0, cause, Some(asked), Attempt::default())
            .unwrap();
        assert_eq!(until - t0, asked);
        assert_eq!(b.last_retry().map(|r| r.wait), Some(asked));
    }

    // A name that does not resolve is retried once, soon, then ends the upload.
    #[test]
    fn lasting_transport_failures_get_one_quick_retry() {
        use crate::action::TransportFailure;
        let t0 = Instant::now();
        let mut b = Backoff::new(no_jitter());
        b.observe_start(t0);
        let other = RetryCause::Transport(TransportFailure::Reset);
        for _ in 0..4 {
            b.failure(t0, other, None, Attempt::default()).unwrap();
        }
        let cause = RetryCause::Transport(TransportFailure::Resolve);
        let until = b.failure(t0, cause, None, Attempt::default()).unwrap();
        assert_eq!(
            until - t0,
            Duration::from_secs(1),
            "the initial backoff, not 16 s"
        );
        assert_eq!(
            b.failure(t0, cause, None, Attempt::default()),
            Err(Error::Transport {
                failure: TransportFailure::Resolve,
                endpoint: None
            })
        );
    }

    // Every retry is described: what failed, the wait, and the attempt count.
    #[test]
    fn each_scheduled_retry_is_described() {
        let t0 = Instant::now();
        let mut b = Backoff::new(no_jitter());
        b.observe_start(t0);
        let uri: http::Uri = "https://storage.example/s?upload_id=secret"
            .parse()
            .unwrap();
        let cause = RetryCause::Status(StatusCode::SERVICE_UNAVAILABLE);
        b.failure(t0, cause, None, Attempt::new(&uri, Some(8..16)))
            .unwrap();
        b.failure(t0, cause, None, Attempt::new(&uri, Some(8..16)))
            .unwrap();
        let retry = b.last_retry().unwrap();
        assert_eq!(retry.attempt, 3);
        assert_eq!(retry.max_attempts, 11);
        assert_eq!(retry.wait, Duration::from_secs(2));
        assert_eq!(retry.source, Some(8..16));
        assert_eq!(
            retry.endpoint.as_ref().unwrap().to_string(),
            "storage.example:443"
        );
    }

    #[test]
    fn waits_in_words() {
        let w = |d| Wait(d).to_string();
        assert_eq!(w(Duration::from_millis(900)), "900 ms");
        assert_eq!(w(Duration::from_millis(4200)), "4.2 s");
        assert_eq!(w(Duration::from_secs(900)), "15 min");
        assert_eq!(w(Duration::from_secs(7500)), "2 h 5 min");
    }

    #[test]
    fn waits_past_the_retry_deadline_give_up() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            retry_deadline: Duration::from_secs(5),
            ..no_jitter()
        };
        let mut b = Backoff::new(policy);
        b.observe_start(t0);
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        ); // until t0+1
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        ); // until t0+2
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_ok()
        ); // until t0+4
        assert!(
            b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                .is_err()
        ); // t0+8 > t0+5
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed_and_bounded() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut b = Backoff::new(RetryPolicy::default().with_seed(seed));
            b.observe_start(t0);
            (0..5)
                .map(|_| {
                    b.failure(t0, RetryCause::NoProgress, None, Attempt::default())
                        .unwrap()
                        - t0
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        for (i, d) in run(7).into_iter().enumerate() {
            let base = Duration::from_secs(1 << i);
            assert!(
                d >= base && d <= base + Duration::from_secs(1),
                "{i}: {d:?}"
            );
        }
    }

    #[test]
    fn retry_after_header_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "12".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:30 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None, "a date needs the Date header");
        h.insert("date", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
