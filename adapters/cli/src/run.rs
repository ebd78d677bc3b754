//! What every upload command shares: opening the input, parsing URLs and headers, the resume
//! state kept between runs (bound to its upload, locked while a run uses it), driving the
//! upload with the blocking driver while showing every retry, and turning how it ended into an
//! exit.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use resumable_auth::{AnySigner, Signer as _};
use resumable_blocking::{
    DriveError, Driver, Event, HookError, SeekableSource, Source, StreamSource, UreqTransport,
};
use resumable_core::driver::Position;
use resumable_core::{
    Error, IntegrityError, RetryPolicy, Retrying, SavedState, Upload, UsageError,
};

use crate::Failure;
use crate::output::Progress;
use crate::size::{human, parse_duration};
use crate::state::{self, Destination, Lock, LockError, Saved};

/// Options every upload command takes (flattened into each command's arguments).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Where the resume state is kept (default: a file in the per-user state folder, keyed by
    /// the protocol, the file's absolute path, size and mtime, and the URL; mode 0600).
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Failed attempts in a row (without the server storing anything new) before giving up;
    /// waits between them grow from 1 s to 32 s plus jitter, honouring Retry-After.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_retries: u32,
    /// How long a run of failed attempts may go on, waits included, e.g. 10m, 900s, 1h
    /// (default 10 minutes; 20 for media). A server that asks to wait longer ends the upload,
    /// which can then be resumed later.
    #[arg(long, value_name = "TIME")]
    pub retry_deadline: Option<String>,
}

impl RunArgs {
    /// Applies the retry options to `retry`, with a jitter seed of this run's own.
    pub fn apply(&self, retry: &mut RetryPolicy) -> Result<(), Failure> {
        *retry = retry.clone().with_seed(seed());
        retry.max_attempts = self.max_retries;
        if let Some(text) = &self.retry_deadline {
            retry.retry_deadline =
                parse_duration(text).map_err(|e| usage(format!("--retry-deadline: {e}")))?;
        }
        Ok(())
    }
}

/// A bad-usage failure (exit 2).
pub fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message)
}

/// The source and what identifies it.
pub struct Input {
    /// The bytes.
    pub source: Box<dyn Source>,
    /// The size, when known (not for stdin).
    pub total: Option<u64>,
    /// Identifies the file's content for the resume state: path, size, mtime.
    pub fingerprint: String,
    /// A short name for the progress bar.
    pub label: String,
}

/// Opens a file (or `-` for stdin) to upload.
pub fn open_input(file: &Path) -> Result<Input, Failure> {
    if file.as_os_str() == "-" {
        return Ok(Input {
            source: Box::new(StreamSource::new(io::stdin())),
            total: None,
            fingerprint: "stdin".into(),
            label: "stdin".into(),
        });
    }
    let shown = file.display();
    let handle = File::open(file).map_err(|e| usage(format!("cannot read {shown}: {e}")))?;
    let meta = handle
        .metadata()
        .map_err(|e| usage(format!("cannot read {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(usage(format!("{shown} is not a regular file")));
    }
    let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(Input {
        source: Box::new(SeekableSource::new(handle)),
        total: Some(meta.len()),
        fingerprint: format!("{}|{}|{mtime}", absolute.display(), meta.len()),
        label: file
            .file_name()
            .map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned()),
    })
}

/// Parses `-H 'Name: value'` lines; values are marked sensitive and never echoed.
pub fn parse_headers(lines: &[String]) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| usage("a header must look like 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| usage(format!("'{}' is not a valid header name", name.trim())))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| usage(format!("the value of header '{name}' is not valid")))?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// Parses an absolute http(s) URL (the text is never echoed: it may hold a signature).
pub fn parse_url(text: &str, what: &str) -> Result<Uri, Failure> {
    let uri: Uri = text
        .parse()
        .map_err(|_| usage(format!("the {what} is not a valid URL")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(usage(format!(
            "the {what} must be an absolute http:// or https:// URL"
        )));
    }
    Ok(uri)
}

/// The resume state of one upload between runs: where it is kept, the lock that keeps other
/// runs off it, and what it is for.
pub struct StateFile {
    path: Option<PathBuf>,
    lock: Option<Lock>,
    protocol: &'static str,
    destination: Destination,
    durable: bool,
}

impl StateFile {
    /// Finds, locks and reads the state of an upload by `protocol` to `destination` (what
    /// identifies where the bytes go, the URL and any option that changes it; `shown_url` in
    /// messages) of `input`: `explicit` (`--state`), else the default file keyed by all of
    /// these, else none (stdin cannot be told apart from another stream, so it has no default
    /// state file). A saved state for another protocol, destination or input is refused:
    /// resuming it would complete some other upload.
    pub fn open(
        explicit: Option<&Path>,
        input: &Input,
        protocol: &'static str,
        destination: &str,
        shown_url: &str,
    ) -> Result<(StateFile, Option<Saved>), Failure> {
        let key = format!("{protocol}|{destination}");
        let path = match (explicit, input.total) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, None) => None,
            (None, Some(_)) => Some(
                state::default_path(&format!("{key}|{}", input.fingerprint))
                    .map_err(|e| usage(format!("no state folder: {e}")))?,
            ),
        };
        let mut file = StateFile {
            path,
            lock: None,
            protocol,
            destination: Destination::new(&key, shown_url),
            // GCS asks the server what it holds on resume; the others cannot (G3, T5, M2).
            durable: protocol != "gcs",
        };
        let Some(path) = file.path.clone() else {
            return Ok((file, None));
        };
        file.lock = Some(Lock::acquire(&path).map_err(|e| match e {
            LockError::InUse(Some(pid)) => usage(format!(
                "the resume state {} is in use by pid {pid}: another run is uploading with it",
                path.display()
            )),
            LockError::InUse(None) => usage(format!(
                "the resume state {} is in use by another run",
                path.display()
            )),
            LockError::Io(e) => usage(format!("cannot lock {}: {e}", path.display())),
        })?);
        let saved = state::load(&path)
            .map_err(|e| usage(format!("cannot use the state file {}: {e}", path.display())))?;
        if let Some(saved) = &saved {
            file.check(saved, &path, &input.fingerprint)?;
        }
        Ok((file, saved))
    }

    /// Refuses a saved state that belongs to another upload.
    fn check(&self, saved: &Saved, path: &Path, fingerprint: &str) -> Result<(), Failure> {
        let other = |what: String| {
            Err(usage(format!(
                "the state file {} belongs to {what}; give another --state, or remove the file \
                 to start over",
                path.display()
            )))
        };
        if saved.protocol != self.protocol {
            return other(format!(
                "a {} upload, not this {} one",
                saved.protocol, self.protocol
            ));
        }
        if let Some(destination) = &saved.destination
            && destination.digest != self.destination.digest
        {
            return other(format!("an upload to {}", destination.shown));
        }
        if saved.state.fingerprint() != fingerprint {
            let input = if fingerprint == "stdin" {
                "an upload of a file, not of stdin".to_owned()
            } else if saved.state.fingerprint() == "stdin" {
                "an upload of stdin, not of this file".to_owned()
            } else {
                "an upload of another file, or of this one before it changed (its size or \
                 modification time differs)"
                    .to_owned()
            };
            return other(input);
        }
        Ok(())
    }

    /// Where the state is kept, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes `state` with what it is for (protocol, destination).
    pub fn save(&self, state: SavedState) -> io::Result<()> {
        let mut saved = Saved::new(state);
        let Some(path) = &self.path else {
            return Ok(());
        };
        saved.protocol = self.protocol.to_owned();
        saved.destination = Some(self.destination.clone());
        state::save(path, &saved, self.durable)
    }

    /// Removes the state (and its lock file): the upload succeeded, or cannot be resumed.
    pub fn remove(&self) {
        if let Some(path) = &self.path {
            state::remove(path);
        }
        if let Some(lock) = &self.lock {
            lock.remove();
        }
    }
}

/// How one upload is run.
pub struct Run<'a> {
    /// Where its state is saved.
    pub state: &'a StateFile,
    /// The progress display.
    pub progress: &'a Progress,
    /// Raised by Ctrl-C, SIGTERM or SIGHUP.
    pub interrupt: Arc<AtomicBool>,
    /// Signs API requests (never session URIs or signed URLs); `None`: nothing is signed.
    pub signer: Option<AnySigner>,
}

/// How often the state is saved after responses alone (see [`drive`]).
const RESPONSE_SAVE_EVERY: Duration = Duration::from_millis(500);

/// A command's own lines about what happens (a compliance job's polls…), called after the
/// shared handling of each event.
pub type Narrate<'a, U> = dyn FnMut(&U, &Event<'_>, &Progress) + 'a;

/// Drives `upload` to its end over ureq, saving its state before every request and after
/// responses, showing progress and every retry, and calling `narrate` on every event. On
/// success the state file is removed.
pub fn drive<U: Upload<State: Into<SavedState>>>(
    upload: &mut U,
    source: &mut dyn Source,
    total: Option<u64>,
    run: Run<'_>,
    narrate: &mut Narrate<'_, U>,
) -> Result<U::Output, DriveError> {
    let mut last_saved: Option<U::State> = None;
    let mut last_save_at = Instant::now();
    let mut position = Position::default();
    let mut transport = UreqTransport::new();
    let mut signer = run.signer;
    let (progress, state) = (run.progress, run.state);
    let result = Driver::new()
        .interrupt(run.interrupt)
        .before_send(move |send| {
            if let Some(signer) = signer.as_mut() {
                signer
                    .sign_send(send)
                    .map_err(|e| -> HookError { Box::new(e) })?;
            }
            Ok(())
        })
        .on_event(|up: &U, event| {
            let shown = position.observe(event, up.persisted());
            match event {
                // Before a request: always, so the saved state covers what the server may
                // hold. After a response: only the acknowledged count moved, and an older one
                // is safe for GCS (a resume asks the server), so at most twice a second.
                Event::Sending { .. } => {
                    save_if_changed(state, up, &mut last_saved)?;
                    last_save_at = Instant::now();
                    progress.set(shown, total);
                }
                Event::Response { .. } => {
                    if last_save_at.elapsed() >= RESPONSE_SAVE_EVERY {
                        save_if_changed(state, up, &mut last_saved)?;
                        last_save_at = Instant::now();
                    }
                    progress.set(shown, total);
                }
                Event::Progress(_) | Event::Failure { .. } => progress.set(shown, total),
                Event::Waiting { until } => {
                    if let Some(retry) = up.last_retry().filter(|r| r.until == *until) {
                        progress.note(&describe_retry(retry));
                        progress.waiting(retry.wait);
                    }
                }
                _ => {}
            }
            narrate(up, event, progress);
            Ok(())
        })
        .drive(upload, source, &mut transport);
    progress.finish();
    if result.is_ok() {
        state.remove();
    } else if let Err(DriveError::Interrupted) = &result {
        let _ = save_if_changed(state, upload, &mut None);
    }
    result
}

/// A retry in words: "HTTP 503 from storage.example on bytes 8 MiB–16 MiB; retrying in
/// 4.2 s, attempt 2 of 11".
pub fn describe_retry(retry: &Retrying) -> String {
    let bytes = match &retry.source {
        Some(r) => format!(" on bytes {}–{}", human(r.start), human(r.end)),
        None => String::new(),
    };
    format!(
        "{}{bytes}; retrying in {:.1} s, attempt {} of {}",
        retry.cause_in_words(),
        retry.wait.as_secs_f64(),
        retry.attempt,
        retry.max_attempts
    )
}

/// Saves the resume state when it differs from what was saved last.
fn save_if_changed<U: Upload<State: Into<SavedState>>>(
    state: &StateFile,
    upload: &U,
    last: &mut Option<U::State>,
) -> Result<(), HookError> {
    let Some(current) = upload.resume_state() else {
        return Ok(());
    };
    if last.as_ref() == Some(&current) {
        return Ok(());
    }
    state
        .save(current.clone().into())
        .map_err(|e| format!("saving the resume state failed: {e}"))?;
    *last = Some(current);
    Ok(())
}

/// How the upload was started, for the hints a failure gives.
#[derive(Clone, Copy, Debug, Default)]
pub struct Started {
    /// The URL was an existing session (`--session`): a new upload cannot be started from it.
    pub from_session: bool,
}

/// Turns how a drive ended into the tool's failure: the cause in words, whether and how it
/// can be resumed (its state is kept then, otherwise dropped), for the text and the `--json`
/// failure object.
pub fn failure<U: Upload<State: Into<SavedState>>>(
    error: DriveError,
    upload: &U,
    file: &Path,
    state: &StateFile,
    started: Started,
) -> Failure {
    let resumable_later = upload.resume_state().is_some();
    let persisted = Some(upload.persisted());
    let keep = |failure: Failure| {
        let _ = save_if_changed(state, upload, &mut None);
        let path = state.path().map(Path::to_path_buf);
        failure.with_resume(path.is_some(), persisted, path)
    };
    match error {
        DriveError::Interrupted => {
            let mut failure =
                Failure::interrupted(resume_hint(upload, file, state.path(), resumable_later));
            if resumable_later {
                failure = keep(failure);
            }
            failure
        }
        DriveError::Upload(e) => {
            let kind = error_kind(&e);
            let mut lines = vec![format!("upload failed: {e}")];
            if e.is_resumable() && resumable_later {
                if let Error::WaitBeyondDeadline { .. } = e {
                    lines
                        .push("to wait that long, run again with a longer --retry-deadline".into());
                }
                lines.push(resume_hint(upload, file, state.path(), resumable_later));
                return keep(Failure::upload(kind, lines));
            }
            if let Error::Usage(UsageError::SourceChanged { .. }) = e {
                // The session holds the original input's bytes: keep it for a run with it.
                lines.push(match state.path() {
                    Some(p) => format!(
                        "run again with the original input to resume, or remove {} to start a \
                         new upload",
                        p.display()
                    ),
                    None => "run again with the original input".into(),
                });
                return keep(Failure::usage_lines(kind, lines));
            }
            state.remove();
            match e {
                Error::SessionGone { .. } if started.from_session => lines.push(
                    "the session cannot be resumed: start a new upload from the original upload \
                     URL"
                    .into(),
                ),
                Error::SessionGone { .. } | Error::Expired { .. } | Error::MediaExpired { .. } => {
                    lines.push("the next run starts a new upload".into())
                }
                Error::Integrity(_) => lines.push(
                    "the object on the server may differ from the input: check it, or delete it \
                     and upload again"
                        .into(),
                ),
                Error::Usage(UsageError::SourceTooShort { .. }) => {
                    lines.push("the file changed while it was being uploaded".into())
                }
                _ => {}
            }
            Failure::upload(kind, lines).with_resume(false, persisted, None)
        }
        DriveError::Source(e) => {
            let failure = Failure::upload("input", vec![format!("reading the input failed: {e}")]);
            if resumable_later {
                keep(failure)
            } else {
                failure
            }
        }
        DriveError::Hook(e) => {
            let failure = Failure::upload("local", vec![e.to_string()]);
            if resumable_later {
                keep(failure)
            } else {
                failure
            }
        }
        other => Failure::upload("internal", vec![other.to_string()]),
    }
}

/// The stable name of an error's kind, for `--json` (documented in the README).
pub fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Usage(UsageError::SourceChanged { .. } | UsageError::SourceTooShort { .. }) => {
            "input_changed"
        }
        Error::Usage(_) => "usage",
        Error::Server { .. } => "server_refused",
        Error::Api { .. } => "api_error",
        Error::Protocol(_) => "protocol_violation",
        Error::Transport { .. } => "network",
        Error::RetriesExhausted { .. } => "retries_exhausted",
        Error::WaitBeyondDeadline { .. } => "wait_beyond_deadline",
        Error::SessionGone { .. } => "session_gone",
        Error::Expired { .. } => "expired",
        Error::MediaExpired { .. } => "media_expired",
        Error::Cancelled => "cancelled",
        Error::Integrity(IntegrityError::Unproven { .. }) => "unproven",
        Error::Integrity(_) => "integrity",
        Error::Compliance(_) => "compliance_job",
        Error::ProcessingFailed { .. } => "processing_failed",
        Error::ProcessingUnfinished { .. } => "processing_unfinished",
        Error::Unsupported(_) => "unsupported",
        _ => "other",
    }
}

fn resume_hint<U: Upload>(
    upload: &U,
    file: &Path,
    state_path: Option<&Path>,
    resumable_later: bool,
) -> String {
    let held = human(upload.persisted());
    match state_path {
        Some(p) if resumable_later => format!(
            "the server holds {held}; to resume, run the same command again \
             (resume state: {})",
            p.display()
        ),
        _ if resumable_later && file.as_os_str() == "-" => {
            "reading stdin cannot be resumed without --state".into()
        }
        _ => "nothing can be resumed; run the same command again to start over".into(),
    }
}

/// A URL for output: without its query string (which may hold a signature or an id).
pub fn redact_query(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => resumable_core::secret::RedactedUri(&uri).to_string(),
        Err(_) => "<redacted>".into(),
    }
}

/// A seed that differs between runs (jitter, multipart boundaries): the core has no
/// randomness of its own.
pub fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Seconds since the Unix epoch by this machine's clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
