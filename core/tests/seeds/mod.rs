//! The seed loop of the tus and IETF simulations: `SIM_SEED` replays one seed and prints its
//! transcript, `SIM_SEEDS` and `SIM_START` choose the range; every seed runs under
//! `catch_unwind`, so a panic is a failing seed with a command that reproduces it.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What one seed's run reports.
pub struct Seeded {
    /// The outcome's kind (`ok`, or the error variant).
    pub outcome: String,
    /// Requests sent.
    pub requests: u64,
    /// Process restarts from the resume state.
    pub restarts: u32,
    /// The exchange, when asked for.
    pub transcript: String,
}

/// A number from the environment; a value that is not one is a mistake worth stopping for.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number")),
    )
}

/// Runs one seed, a panic becoming its error.
pub fn catch(run: impl FnOnce() -> Result<Seeded, String>) -> Result<Seeded, String> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

/// Runs the seeds the environment asks for (`default` of them from 0 when it asks nothing),
/// stopping after `max_failures` failing seeds; with 2,000 seeds or more, every kind in
/// `expected` must have been an outcome.
pub fn run_seeds(
    protocol: &str,
    test: &str,
    default: u64,
    max_failures: usize,
    expected: &[&str],
    run: impl Fn(u64, bool) -> Result<Seeded, String>,
) {
    if let Some(seed) = env_u64("SIM_SEED") {
        match catch(|| run(seed, true)) {
            Ok(s) => println!(
                "{}{protocol} seed {seed}: {} in {} requests",
                s.transcript, s.outcome, s.requests
            ),
            Err(e) => panic!("{protocol} seed {seed}: {e}"),
        }
        return;
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(default);
    let start = env_u64("SIM_START").unwrap_or(0);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut restarts, mut requests) = (0u64, 0u64);
    for seed in start..start + count {
        match catch(|| run(seed, false)) {
            Ok(s) => {
                *outcomes.entry(s.outcome).or_default() += 1;
                restarts += u64::from(s.restarts);
                requests += s.requests;
            }
            Err(e) => {
                eprintln!(
                    "SIMULATION FAILURE {protocol} seed {seed}: {e}\n  reproduce: SIM_SEED={seed} \
                     cargo test -p resumable-core --test {test} -- --nocapture"
                );
                failures.push(seed);
                if failures.len() >= max_failures {
                    break;
                }
            }
        }
    }
    println!(
        "{protocol}: {count} seeds from {start}: {outcomes:?}, {requests} requests, {restarts} restarts"
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    if count >= 2_000 {
        for kind in expected {
            assert!(
                outcomes.contains_key(*kind),
                "no seed ended in {kind}: {outcomes:?}"
            );
        }
    }
}

/// A seed's run depends on nothing else: the same seed twice gives the same transcript.
pub fn assert_replays_exactly(run: impl Fn(u64, bool) -> Result<Seeded, String>) {
    for seed in [1, 77, 4242] {
        let a = catch(|| run(seed, true)).map(|s| (s.outcome, s.requests, s.transcript));
        let b = catch(|| run(seed, true)).map(|s| (s.outcome, s.requests, s.transcript));
        assert_eq!(a, b, "seed {seed}");
    }
}
