//! Retry policy as plain data (G8, T6), and the backoff bookkeeping every protocol shares.
//!
//! The core decides when to retry and for how long to wait; the driver only sleeps until the
//! instant the core returns in [`crate::Action::Wait`]. Jitter comes from a seeded generator,
//! so a run is reproducible from the seed.

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};

use crate::error::{Error, RetryCause};

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

/// Backoff bookkeeping for one upload: counts failures since the last progress and turns each
/// failure into the instant to retry at, or into the final error.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    rng: u64,
    started: Option<Instant>,
    run_started: Option<Instant>,
    failures: u32,
    total_retries: u64,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let rng = policy.seed;
        Backoff {
            policy,
            rng,
            started: None,
            run_started: None,
            failures: 0,
            total_retries: 0,
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

    /// The server stored something new: the run of failures is over.
    pub(crate) fn progress(&mut self) {
        self.failures = 0;
        self.run_started = None;
    }

    /// A retryable failure happened at `now`. Returns when to try again, or the error that
    /// ends the upload when the budget or a deadline is spent.
    pub(crate) fn failure(
        &mut self,
        now: Instant,
        cause: RetryCause,
        retry_after: Option<Duration>,
    ) -> Result<Instant, Error> {
        self.failures = self.failures.saturating_add(1);
        let run_started = *self.run_started.get_or_insert(now);
        let exhausted = Error::RetriesExhausted {
            attempts: self.failures,
            last: cause,
        };
        if self.failures > self.policy.max_attempts {
            return Err(exhausted);
        }
        let mut delay = self.backoff(self.failures);
        if let Some(after) = retry_after {
            delay = delay.max(after.min(self.policy.max_retry_after));
        }
        let until = now.checked_add(delay).ok_or_else(|| exhausted.clone())?;
        let run_deadline = run_started.checked_add(self.policy.retry_deadline);
        if run_deadline.is_some_and(|d| until > d) {
            return Err(exhausted);
        }
        if let (Some(total), Some(started)) = (self.policy.total_deadline, self.started) {
            if started.checked_add(total).is_none_or(|d| until > d) {
                return Err(exhausted);
            }
        }
        self.total_retries += 1;
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
                let until = b.failure(t0, RetryCause::NoProgress, None).unwrap();
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
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok());
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok());
        b.progress();
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok());
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok());
        let cause = RetryCause::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            b.failure(t0, cause, None),
            Err(Error::RetriesExhausted {
                attempts: 3,
                last: cause
            })
        );
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
            .failure(t0, RetryCause::NoProgress, Some(Duration::from_secs(7)))
            .unwrap();
        assert_eq!(u - t0, Duration::from_secs(7));
        let u = b
            .failure(t0, RetryCause::NoProgress, Some(Duration::from_secs(500)))
            .unwrap();
        assert_eq!(u - t0, Duration::from_secs(100));
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
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok()); // until t0+1
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok()); // until t0+2
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_ok()); // until t0+4
        assert!(b.failure(t0, RetryCause::NoProgress, None).is_err()); // t0+8 > t0+5
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed_and_bounded() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut b = Backoff::new(RetryPolicy::default().with_seed(seed));
            b.observe_start(t0);
            (0..5)
                .map(|_| b.failure(t0, RetryCause::NoProgress, None).unwrap() - t0)
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
