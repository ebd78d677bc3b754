//! What every upload command shares: opening the input, parsing URLs and headers, the resume
//! state kept between runs, driving the upload with the blocking driver, and turning how it
//! ended into an exit.

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
use resumable_core::compliance::ComplianceJob;
use resumable_core::gcs::GcsUpload;
use resumable_core::media::MediaUpload;
use resumable_core::ton::TonUpload;
use resumable_core::{Error, Upload, UsageError};

use crate::Failure;
use crate::output::Progress;
use crate::size::human;
use crate::state::{self, Saved};

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
}

/// A bad-usage failure (exit 2).
pub fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
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

/// Where the resume state of an upload is kept: `explicit`, else the default file keyed by
/// `key` (protocol, file identity, URL), else none (stdin cannot be told apart from another
/// stream, so it has no default state file).
pub fn state_path(
    explicit: Option<&Path>,
    input: &Input,
    key: &str,
) -> Result<Option<PathBuf>, Failure> {
    match (explicit, input.total) {
        (Some(p), _) => Ok(Some(p.to_path_buf())),
        (None, None) => Ok(None),
        (None, Some(_)) => state::default_path(&format!("{key}|{}", input.fingerprint))
            .map(Some)
            .map_err(|e| usage(format!("no state folder: {e}"))),
    }
}

/// Reads the saved state, if any.
pub fn load_state(path: Option<&Path>) -> Result<Option<Saved>, Failure> {
    match path {
        Some(p) => state::load(p)
            .map_err(|e| usage(format!("cannot use the state file {}: {e}", p.display()))),
        None => Ok(None),
    }
}

/// An upload whose resume state the tool saves between runs.
pub trait Saveable: Upload {
    /// Its resume state.
    type State: Clone + PartialEq;
    /// The state to save now, if any.
    fn state(&self) -> Option<Self::State>;
    /// The state as the file holds it.
    fn saved(state: Self::State) -> Saved;
}

impl Saveable for GcsUpload {
    type State = resumable_core::gcs::ResumeState;
    fn state(&self) -> Option<Self::State> {
        self.resume_state()
    }
    fn saved(state: Self::State) -> Saved {
        Saved {
            gcs: Some(state),
            ..Saved::new("gcs")
        }
    }
}

impl Saveable for TonUpload {
    type State = resumable_core::ton::TonResumeState;
    fn state(&self) -> Option<Self::State> {
        self.resume_state()
    }
    fn saved(state: Self::State) -> Saved {
        Saved {
            ton: Some(state),
            ..Saved::new("ton")
        }
    }
}

impl Saveable for MediaUpload {
    type State = resumable_core::media::MediaResumeState;
    fn state(&self) -> Option<Self::State> {
        self.resume_state()
    }
    fn saved(state: Self::State) -> Saved {
        Saved {
            media: Some(state),
            ..Saved::new("media")
        }
    }
}

impl Saveable for ComplianceJob {
    type State = resumable_core::compliance::ComplianceResumeState;
    fn state(&self) -> Option<Self::State> {
        self.resume_state()
    }
    fn saved(state: Self::State) -> Saved {
        Saved {
            compliance: Some(state),
            ..Saved::new("compliance")
        }
    }
}

/// How one upload is run.
pub struct Run<'a> {
    /// Where its state is saved (none: not saved).
    pub state_path: Option<&'a Path>,
    /// The progress display.
    pub progress: &'a Progress,
    /// Raised by Ctrl-C.
    pub interrupt: Arc<AtomicBool>,
    /// Signs API requests (never session URIs or signed URLs); `None`: nothing is signed.
    pub signer: Option<AnySigner>,
}

/// How often the state is saved after responses alone (see [`drive`]).
const RESPONSE_SAVE_EVERY: Duration = Duration::from_millis(500);

/// Drives `upload` to its end over ureq, saving its state before every request and after
/// every response, and showing progress. On success the state file is removed.
pub fn drive<U: Saveable>(
    upload: &mut U,
    source: &mut dyn Source,
    total: Option<u64>,
    run: Run<'_>,
) -> Result<U::Output, DriveError> {
    let mut last_saved: Option<U::State> = None;
    let mut last_save_at = Instant::now();
    let mut transport = UreqTransport::new();
    let mut signer = run.signer;
    let progress = run.progress;
    let state_path = run.state_path;
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
            match event {
                // Before a request: always, so the saved `sent` bound covers what the server
                // may hold. After a response: only the acknowledged count moved, and an older
                // one is safe (a resume asks the server), so at most twice a second.
                Event::Sending { .. } => {
                    if let Some(path) = state_path {
                        save_if_changed(path, up, &mut last_saved)?;
                        last_save_at = Instant::now();
                    }
                    progress.set(up.persisted(), total);
                }
                Event::Response { .. } => {
                    if let Some(path) = state_path {
                        if last_save_at.elapsed() >= RESPONSE_SAVE_EVERY {
                            save_if_changed(path, up, &mut last_saved)?;
                            last_save_at = Instant::now();
                        }
                    }
                    progress.set(up.persisted(), total);
                }
                Event::Progress(p) => progress.set(p.source_position, total),
                Event::Failure { failure, .. } => {
                    progress.note(&format!("transport failure ({failure}); will retry"))
                }
                _ => {}
            }
            Ok(())
        })
        .drive(upload, source, &mut transport);
    progress.finish();
    if result.is_ok() {
        if let Some(p) = state_path {
            state::remove(p);
        }
    } else if let (Some(p), Err(DriveError::Interrupted)) = (state_path, &result) {
        let _ = save_if_changed(p, upload, &mut None);
    }
    result
}

/// Saves the resume state when it differs from what was saved last.
fn save_if_changed<U: Saveable>(
    path: &Path,
    upload: &U,
    last: &mut Option<U::State>,
) -> Result<(), HookError> {
    let Some(current) = upload.state() else {
        return Ok(());
    };
    if last.as_ref() == Some(&current) {
        return Ok(());
    }
    state::save(path, &U::saved(current.clone()))
        .map_err(|e| format!("saving the resume state failed: {e}"))?;
    *last = Some(current);
    Ok(())
}

/// Turns how a drive ended into the tool's failure: the cause in words, and how to resume
/// when the upload can be resumed (its state is kept) — otherwise the state is dropped.
pub fn failure<U: Saveable>(
    error: DriveError,
    upload: &U,
    file: &Path,
    state_path: Option<&Path>,
) -> Failure {
    let resumable_later = upload.state().is_some();
    match error {
        DriveError::Interrupted => {
            Failure::Interrupted(resume_hint(upload, file, state_path, resumable_later))
        }
        DriveError::Upload(e) => {
            let mut lines = vec![format!("upload failed: {e}")];
            if e.is_resumable() && resumable_later {
                if let Some(p) = state_path {
                    let _ = save_if_changed(p, upload, &mut None);
                }
                lines.push(resume_hint(upload, file, state_path, resumable_later));
            } else {
                if let Some(p) = state_path {
                    state::remove(p);
                }
                match e {
                    Error::SessionGone { .. }
                    | Error::Expired { .. }
                    | Error::MediaExpired { .. } => {
                        lines.push("the next run starts a new upload".into())
                    }
                    Error::Usage(UsageError::SourceTooShort { .. }) => {
                        lines.push("the file changed while it was being uploaded".into())
                    }
                    _ => {}
                }
            }
            Failure::Upload(lines)
        }
        DriveError::Source(e) => Failure::Upload(vec![format!("reading the source failed: {e}")]),
        DriveError::Hook(e) => Failure::Upload(vec![e.to_string()]),
        other => Failure::Upload(vec![other.to_string()]),
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
