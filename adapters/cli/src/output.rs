//! What the tool shows: a progress bar on stderr, and the outcome on stdout (one JSON object
//! with `--json`, a line of text otherwise). Nothing here prints a URL's query string, a
//! header value or a session URI.

use std::cell::Cell;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Failure;

const BAR: &str =
    "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}";
const SPINNER: &str = "{prefix} {spinner} {bytes} {binary_bytes_per_sec}";
const BAR_WAITING: &str = "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}";
const SPINNER_WAITING: &str = "{prefix} {spinner} {bytes} {msg}";

/// The bar on screen, if any: log lines (`-v`, `--log-http`) are printed above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes a log line to stderr, above the progress bar when one is shown.
pub fn log_line(bytes: &[u8]) {
    let bar = SHOWN.lock().ok().and_then(|b| b.clone());
    let write = || {
        let _ = std::io::stderr().lock().write_all(bytes);
    };
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// A progress bar on stderr, or nothing when it is off or stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    known_total: bool,
    /// The first position shown: a resumed upload starts there, and its rate and ETA count
    /// from there, not from 0.
    started: Cell<bool>,
    /// While a retry's wait lasts, the bar shows it instead of a rate.
    waiting_until: Cell<Option<Instant>>,
}

impl Progress {
    /// A bar for `total` bytes (a spinner with a byte count when the total is unknown).
    pub fn new(enabled: bool, total: Option<u64>, label: &str) -> Self {
        let mut progress = Progress {
            bar: None,
            known_total: total.is_some(),
            started: Cell::new(false),
            waiting_until: Cell::new(None),
        };
        if !enabled || !std::io::stderr().is_terminal() {
            return progress;
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = Some(bar.clone());
        }
        progress.bar = Some(bar);
        progress.style(false);
        progress
    }

    fn style(&self, waiting: bool) {
        let Some(bar) = &self.bar else { return };
        let template = match (self.known_total, waiting) {
            (true, false) => BAR,
            (false, false) => SPINNER,
            (true, true) => BAR_WAITING,
            (false, true) => SPINNER_WAITING,
        };
        let style = ProgressStyle::with_template(template).unwrap_or_else(|_| {
            if self.known_total {
                ProgressStyle::default_bar()
            } else {
                ProgressStyle::default_spinner()
            }
        });
        bar.set_style(style.progress_chars("=> "));
    }

    /// Shows `position` bytes as done.
    pub fn set(&self, position: u64, total: Option<u64>) {
        let Some(bar) = &self.bar else { return };
        if let Some(t) = total {
            bar.set_length(t);
        }
        if self
            .waiting_until
            .get()
            .is_some_and(|until| Instant::now() >= until)
        {
            self.waiting_until.set(None);
            self.style(false);
        }
        bar.set_position(position);
        if !self.started.replace(true) {
            // What a resumed upload starts from was not sent in this run.
            bar.reset_eta();
            bar.reset_elapsed();
        }
    }

    /// Shows `text` after the rate (what the bar's position does not say: bytes sent while
    /// the position counts what the server acknowledged), unless a retry's wait is shown.
    pub fn detail(&self, text: &str) {
        let Some(bar) = &self.bar else { return };
        if self.waiting_until.get().is_none() {
            bar.set_message(text.to_owned());
        }
    }

    /// Shows that the upload waits `wait` before its next attempt.
    pub fn waiting(&self, wait: Duration) {
        let Some(bar) = &self.bar else { return };
        self.waiting_until.set(Some(Instant::now() + wait));
        bar.set_message(format!(
            "waiting {:.0} s to retry",
            wait.as_secs_f64().ceil()
        ));
        self.style(true);
        bar.reset_eta();
    }

    /// A one-line message above the bar (or on stderr when there is no bar).
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            if let Ok(mut shown) = SHOWN.lock() {
                *shown = None;
            }
        }
    }
}

/// Prints the outcome of a successful upload on stdout. A stdout that fails (a closed pipe, a
/// full disk) is a failure of its own, never a panic, and says that the upload succeeded.
pub fn print_result(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| {
            Failure::upload(
                "output",
                vec![format!(
                    "could not write the result to standard output ({e}); the upload itself \
                     succeeded"
                )],
            )
            .no_json()
        })
}
