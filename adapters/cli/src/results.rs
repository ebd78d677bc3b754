//! The results of a completed compliance job (C3): streamed from its `download_url` (no
//! credentials) to a file or stdout, counted by action and reason, each failed attempt
//! retried by the same policy as the job's own requests.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use resumable_blocking::UreqTransport;
use resumable_core::compliance::CompletedJob;
use resumable_core::retry::Backoff;
use resumable_core::{Error, RetryCause, RetryPolicy};

use crate::output::Progress;
use crate::run;

/// What the download found.
#[derive(Debug, Default)]
pub(crate) struct Downloaded {
    /// Bytes of results.
    pub(crate) bytes: u64,
    /// Result lines.
    pub(crate) results: u64,
    /// Lines per `action` value.
    pub(crate) actions: BTreeMap<String, u64>,
    /// Lines per `reason` value.
    pub(crate) reasons: BTreeMap<String, u64>,
    /// Lines that are not JSON objects.
    pub(crate) unreadable: u64,
    /// GET requests sent.
    pub(crate) requests: u64,
    /// Of which retries.
    pub(crate) retries: u64,
}

impl Downloaded {
    fn count(&mut self, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        self.results += 1;
        let Ok(serde_json::Value::Object(result)) = serde_json::from_slice(line) else {
            self.unreadable += 1;
            return;
        };
        let field = |key: &str| {
            result
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(|v| v.chars().filter(|c| !c.is_control()).take(64).collect())
                .unwrap_or_else(|| "(none)".to_owned())
        };
        *self.actions.entry(field("action")).or_default() += 1;
        *self.reasons.entry(field("reason")).or_default() += 1;
    }
}

/// Why the results could not be downloaded.
#[derive(Debug)]
pub(crate) enum DownloadError {
    /// The server refused (the URL expired, or the results are gone).
    Status(u16, String),
    /// The network kept failing, or the server kept answering a status worth retrying.
    Failed(Error),
    /// The download to stdout failed after results were written (they cannot be taken
    /// back, so it is not retried).
    CutShort(RetryCause),
    /// Writing the results failed.
    Write(io::Error),
    /// Ctrl-C.
    Interrupted,
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::Status(status, message) if message.is_empty() => {
                write!(f, "the server answered HTTP {status}")
            }
            DownloadError::Status(status, message) => {
                write!(f, "the server answered HTTP {status}: {message}")
            }
            DownloadError::Failed(e) => write!(f, "{e}"),
            DownloadError::CutShort(cause) => write!(
                f,
                "{cause} after results were written to stdout; give --out to have a failed \
                 download retried"
            ),
            DownloadError::Write(e) => write!(f, "writing the results failed: {e}"),
            DownloadError::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// One attempt's failure: worth another attempt (by the retry policy), or final.
enum Attempt {
    Retry(RetryCause, Option<Duration>),
    Fatal(DownloadError),
}

/// Streams the JSON Lines results from `download_url` (C3: no credentials) to `out` (stdout
/// when `None`), counting them. A file is written beside its final name and renamed at the
/// end. Failures are retried from the start by the same policy as the job's requests, except
/// once results reached stdout (they cannot be taken back).
pub(crate) fn download(
    done: &CompletedJob,
    out: Option<&Path>,
    policy: RetryPolicy,
    progress: &Progress,
    interrupt: &AtomicBool,
) -> Result<Downloaded, DownloadError> {
    let transport = UreqTransport::new();
    let mut request = http::Request::new(());
    *request.uri_mut() = done.job.download_url.expose().clone();
    let part = out.map(|p| {
        let name = p
            .file_name()
            .map_or_else(|| "results".into(), |n| n.to_string_lossy().into_owned());
        p.with_file_name(format!(".{name}.part"))
    });
    let mut backoff = Backoff::new(policy.clone());
    let (mut requests, mut retries) = (0, 0);
    loop {
        if interrupt.load(Ordering::SeqCst) {
            return Err(DownloadError::Interrupted);
        }
        requests += 1;
        let mut counted = Downloaded {
            requests,
            retries,
            ..Downloaded::default()
        };
        let fetch = |to: &mut dyn io::Write, counted: &mut Downloaded| {
            fetch(&transport, &request, &policy, to, counted, interrupt)
        };
        let attempt = match (&part, out) {
            (Some(part), Some(target)) => {
                let file = File::create(part).map_err(DownloadError::Write)?;
                let mut writer = io::BufWriter::new(file);
                let result = fetch(&mut writer, &mut counted);
                let flushed = writer.into_inner().map_err(|e| e.into_error());
                match (result, flushed.and_then(|f| f.sync_all())) {
                    (Ok(()), Ok(())) => {
                        fs::rename(part, target).map_err(DownloadError::Write)?;
                        return Ok(counted);
                    }
                    (Ok(()), Err(e)) => Attempt::Fatal(DownloadError::Write(e)),
                    (Err(attempt), _) => attempt,
                }
            }
            _ => {
                let mut writer = io::stdout().lock();
                match fetch(&mut writer, &mut counted) {
                    Ok(()) => {
                        writer.flush().map_err(DownloadError::Write)?;
                        return Ok(counted);
                    }
                    Err(Attempt::Retry(cause, _)) if counted.bytes > 0 => {
                        Attempt::Fatal(DownloadError::CutShort(cause))
                    }
                    Err(attempt) => attempt,
                }
            }
        };
        let retry = match attempt {
            Attempt::Fatal(e) => Err(e),
            Attempt::Retry(cause, after) => backoff
                .retry(Instant::now(), cause, after, request.uri())
                .map_err(DownloadError::Failed),
        };
        match retry {
            Ok(retry) => {
                retries += 1;
                progress.note(&format!("downloading: {}", run::describe_retry(&retry)));
                while Instant::now() < retry.until && !interrupt.load(Ordering::SeqCst) {
                    let left = retry.until.saturating_duration_since(Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
            }
            Err(e) => {
                if let Some(part) = &part {
                    let _ = fs::remove_file(part);
                }
                return Err(e);
            }
        }
    }
}

/// One GET of the results, written to `out` line by line.
fn fetch(
    transport: &UreqTransport,
    request: &http::Request<()>,
    policy: &RetryPolicy,
    out: &mut dyn io::Write,
    counted: &mut Downloaded,
    interrupt: &AtomicBool,
) -> Result<(), Attempt> {
    let response = transport
        .open(request)
        .map_err(|failure| Attempt::Retry(RetryCause::Transport(failure), None))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        let after = resumable_core::retry::retry_after(response.headers());
        let mut body = Vec::new();
        let _ = response.into_body().take(4096).read_to_end(&mut body);
        let message = resumable_core::response::server_message(&body).unwrap_or_default();
        return Err(match policy.retries_status(status) {
            true => Attempt::Retry(RetryCause::Status(status), after),
            false => Attempt::Fatal(DownloadError::Status(status.as_u16(), message)),
        });
    }
    let mut reader = BufReader::with_capacity(256 * 1024, response.into_body());
    let mut line = Vec::new();
    loop {
        if interrupt.load(Ordering::SeqCst) {
            return Err(Attempt::Fatal(DownloadError::Interrupted));
        }
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| {
            Attempt::Retry(RetryCause::Transport(UreqTransport::body_failure(e)), None)
        })?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&line)
            .map_err(|e| Attempt::Fatal(DownloadError::Write(e)))?;
        counted.bytes += n as u64;
        counted.count(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_counted_by_action_and_reason() {
        let mut d = Downloaded::default();
        for line in [
            &br#"{"id":"1","action":"delete","reason":"deleted"}"#[..],
            br#"{"id":"2","action":"delete","reason":"suspended"}"#,
            br#"{"id":"3","action":"scrub_geo","reason":"scrub_geo"}"#,
            b"   ",
            b"not json",
        ] {
            d.count(line);
        }
        assert_eq!(d.results, 4);
        assert_eq!(d.unreadable, 1);
        assert_eq!(d.actions["delete"], 2);
        assert_eq!(d.actions["scrub_geo"], 1);
        assert_eq!(d.reasons["suspended"], 1);
    }
}
