//! `-v`, `--log-http` and `RUST_LOG`: the drivers' `tracing` events on stderr, above the
//! progress bar. Every URI and header in them has already been redacted by the core (no
//! credential, signature, upload id or session URI).

use std::io;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go: stderr, through the progress bar's lock.
struct Stderr;

impl io::Write for Stderr {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        crate::output::log_line(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

/// Turns the log on: `RUST_LOG` when set (e.g. `resumable=debug`), else `--log-http` (every
/// request and answer, and failed requests), else `-v` (failed requests). The tool prints
/// every retry and resume decision itself, so their events are not shown twice.
pub fn init(verbose: bool, log_http: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ if log_http => EnvFilter::new("resumable::http=debug"),
        _ if verbose => EnvFilter::new("resumable::http=info"),
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .try_init();
}
