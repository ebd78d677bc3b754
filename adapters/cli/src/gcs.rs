//! `resumable gcs`: a Google Cloud Storage resumable upload (G1–G12).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::UNIX_EPOCH;

use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use resumable_blocking::{
    DriveError, Driver, Event, SeekableSource, Source, StreamSource, UreqTransport,
};
use resumable_core::chunk::{GCS_GRANULE, round_to_granule};
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload, ResumeState, Start};
use resumable_core::secret::RedactedUri;
use resumable_core::{Error, SessionUri, UsageError};

use crate::Failure;
use crate::output::Progress;
use crate::size::{human, parse_size};
use crate::state::{self, Saved};

/// Arguments of `resumable gcs`.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 success, 1 upload failed, 2 bad usage or input, \
130 interrupted (state saved: run the same command again to resume)."
)]
pub struct GcsArgs {
    /// The file to upload, or - for stdin (total size unknown).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// A signed/XML upload URL (started with x-goog-resumable: start), a JSON API URL with
    /// uploadType=resumable (started with POST + X-Upload-*), or with --session an existing
    /// session URI to resume.
    #[arg(value_name = "URL")]
    url: String,
    /// URL is a session URI to resume (G3).
    #[arg(long)]
    session: bool,
    /// Bytes per request: a multiple of 256 KiB, e.g. 256KiB, 8MiB, 1048576.
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    chunk_size: String,
    /// The object's content type (default: from the file name, else application/octet-stream).
    #[arg(long, value_name = "MIME")]
    content_type: Option<String>,
    /// An extra header for the start request, 'Name: value' (repeatable; e.g. Authorization).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Where the resume state is kept (default: a per-user state folder, keyed by the file's
    /// absolute path, size, mtime and the URL; file mode 0600).
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Failed attempts in a row (without the server storing anything new) before giving up;
    /// waits between them grow from 1 s to 32 s (G8).
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_retries: u32,
}

/// The source and what identifies it.
struct Input {
    source: Box<dyn Source>,
    total: Option<u64>,
    /// Identifies the file's content for the resume state: path, size, mtime.
    fingerprint: String,
    label: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn open_input(file: &Path) -> Result<Input, Failure> {
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

fn parse_headers(lines: &[String]) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| usage("a header must look like 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| usage(format!("'{}' is not a valid header name", name.trim())))?;
        // The value may be a credential: never echo it.
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| usage(format!("the value of header '{name}' is not valid")))?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_url(text: &str) -> Result<Uri, Failure> {
    let uri: Uri = text.parse().map_err(|_| usage("the URL is not valid"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(usage("the URL must be an absolute http:// or https:// URL"));
    }
    Ok(uri)
}

fn content_type(args: &GcsArgs) -> Result<HeaderValue, Failure> {
    let text = match &args.content_type {
        Some(t) => t.clone(),
        None => mime_guess::from_path(&args.file)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_owned(),
    };
    HeaderValue::from_str(&text).map_err(|_| usage("the content type is not valid"))
}

fn chunk_size(text: &str) -> Result<u64, Failure> {
    let size = parse_size(text).map_err(|e| usage(format!("--chunk-size: {e}")))?;
    if size == 0 || size % GCS_GRANULE != 0 {
        return Err(usage(format!(
            "--chunk-size must be a multiple of 256 KiB (262144 bytes); nearest: {}",
            human(round_to_granule(size, GCS_GRANULE))
        )));
    }
    Ok(size)
}

/// One GCS upload as the tool runs it: what `resumable gcs` builds from its arguments and
/// `resumable demo` builds for the embedded server.
pub struct Job {
    /// The file, or `-` for stdin.
    pub file: PathBuf,
    /// The upload URL (or the session URI with `session`), as given.
    pub url: String,
    /// `url` is a session URI (G3).
    pub session: bool,
    /// Bytes per request (a multiple of 256 KiB).
    pub chunk: u64,
    /// The object's content type.
    pub content_type: HeaderValue,
    /// Extra headers for the start request.
    pub start_headers: HeaderMap,
    /// An explicit state file (else the default one, none for stdin).
    pub state: Option<PathBuf>,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Failed attempts in a row before giving up.
    pub max_retries: u32,
}

/// What a finished upload reports.
pub struct Report {
    /// The core's completion.
    pub done: GcsCompletion,
    /// Requests, retries, where it resumed from.
    pub stats: resumable_core::gcs::Stats,
}

/// Runs `resumable gcs`.
pub fn run(args: GcsArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let job = Job {
        chunk: chunk_size(&args.chunk_size)?,
        content_type: content_type(&args)?,
        start_headers: parse_headers(&args.headers)?,
        file: args.file,
        url: args.url,
        session: args.session,
        state: args.state,
        progress: !args.no_progress,
        max_retries: args.max_retries,
    };
    let report = execute(&job, interrupt)?;
    report_success(args.json, &report);
    Ok(())
}

/// Runs one upload to its end: resumes from the saved state when there is one, saves the
/// state before every request and after every response, removes it on success.
pub fn execute(job: &Job, interrupt: Arc<AtomicBool>) -> Result<Report, Failure> {
    let url = parse_url(&job.url)?;
    let mut input = open_input(&job.file)?;

    // stdin cannot be told apart from another stream, so it has no default state file.
    let state_path = match (&job.state, input.total) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => None,
        (None, Some(_)) => {
            let key = format!("gcs|{}|{}|{}", input.fingerprint, job.session, job.url);
            Some(state::default_path(&key).map_err(|e| usage(format!("no state folder: {e}")))?)
        }
    };
    let saved = match &state_path {
        Some(p) => state::load(p)
            .map_err(|e| usage(format!("cannot use the state file {}: {e}", p.display())))?
            .and_then(|s| s.gcs)
            .filter(|s| s.fingerprint == input.fingerprint),
        None => None,
    };

    let mut config = GcsConfig::new(input.total);
    config.chunk_size = job.chunk;
    config.start_headers = job.start_headers.clone();
    config.fingerprint = input.fingerprint.clone();
    config.retry = config.retry.with_seed(seed());
    config.retry.max_attempts = job.max_retries;
    let content_type = job.content_type.clone();
    let start = match saved {
        Some(state) => Start::Resume(state),
        None if job.session => {
            Start::Session(SessionUri::new(url.clone()).map_err(|e| usage(e.to_string()))?)
        }
        None if url
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "uploadType=resumable")) =>
        {
            Start::Json {
                url: url.clone(),
                content_type,
                metadata: None,
            }
        }
        None => Start::Xml {
            url: url.clone(),
            content_type,
        },
    };
    let resuming = matches!(start, Start::Resume(_) | Start::Session(_));
    let mut upload = GcsUpload::new(start, config).map_err(|e| usage(e.to_string()))?;

    let progress = Progress::new(job.progress, input.total, &input.label);
    if resuming {
        progress.note("resuming the saved upload session");
    }
    let mut last_saved: Option<ResumeState> = None;
    let mut transport = UreqTransport::new();
    let result = {
        let state_path = state_path.clone();
        let progress = &progress;
        let last_saved = &mut last_saved;
        Driver::new()
            .interrupt(interrupt)
            .on_event(move |up: &GcsUpload, event| {
                match event {
                    Event::Sending { .. } | Event::Response { .. } => {
                        if let Some(path) = &state_path {
                            save_if_changed(path, up, last_saved)?;
                        }
                        progress.set(up.persisted(), up.total());
                    }
                    Event::Progress(p) => progress.set(p.source_position, up.total()),
                    Event::Failure { failure, .. } => {
                        progress.note(&format!("transport failure ({failure}); will retry"))
                    }
                    _ => {}
                }
                Ok(())
            })
            .drive(&mut upload, input.source.as_mut(), &mut transport)
    };
    progress.finish();

    match result {
        Ok(done) => {
            if let Some(p) = &state_path {
                state::remove(p);
            }
            Ok(Report {
                done,
                stats: upload.stats(),
            })
        }
        Err(DriveError::Interrupted) => {
            if let Some(p) = &state_path {
                let _ = save_if_changed(p, &upload, &mut last_saved);
            }
            Err(Failure::Interrupted(resume_hint(
                &job.file,
                state_path.as_deref(),
                &upload,
            )))
        }
        Err(DriveError::Upload(e)) => Err(upload_failure(
            &job.file,
            state_path.as_deref(),
            &upload,
            &e,
        )),
        Err(DriveError::Source(e)) => Err(Failure::Upload(vec![format!(
            "reading the source failed: {e}"
        )])),
        Err(other) => Err(Failure::Upload(vec![other.to_string()])),
    }
}

/// Saves the resume state when it differs from what was saved last.
fn save_if_changed(
    path: &Path,
    upload: &GcsUpload,
    last: &mut Option<ResumeState>,
) -> Result<(), resumable_blocking::HookError> {
    let Some(current) = upload.resume_state() else {
        return Ok(());
    };
    if last.as_ref() == Some(&current) {
        return Ok(());
    }
    let saved = Saved {
        version: state::VERSION,
        protocol: "gcs".into(),
        gcs: Some(current.clone()),
    };
    state::save(path, &saved).map_err(|e| format!("saving the resume state failed: {e}"))?;
    *last = Some(current);
    Ok(())
}

fn resume_hint(file: &Path, state_path: Option<&Path>, upload: &GcsUpload) -> String {
    let held = human(upload.persisted());
    match state_path {
        Some(p) if upload.session().is_some() => format!(
            "the server holds {held}; to resume, run the same command again \
             (resume state: {})",
            p.display()
        ),
        _ if upload.session().is_some() && file.as_os_str() == "-" => {
            "reading stdin cannot be resumed without --state".into()
        }
        _ => "nothing was uploaded; run the same command again to start over".into(),
    }
}

fn upload_failure(
    file: &Path,
    state_path: Option<&Path>,
    upload: &GcsUpload,
    e: &Error,
) -> Failure {
    let mut lines = vec![format!("upload failed: {e}")];
    if e.is_resumable() && upload.session().is_some() {
        if let Some(p) = state_path {
            let _ = save_if_changed(p, upload, &mut None);
        }
        lines.push(resume_hint(file, state_path, upload));
    } else {
        if let Some(p) = state_path {
            state::remove(p);
        }
        if matches!(e, Error::SessionGone { .. }) {
            lines.push("the next run starts a new session".into());
        }
        if matches!(e, Error::Usage(UsageError::SourceTooShort { .. })) {
            lines.push("the file changed while it was being uploaded".into());
        }
    }
    Failure::Upload(lines)
}

fn report_success(json: bool, report: &Report) {
    let (done, stats) = (&report.done, report.stats);
    let crc = done.crc32c.map(resumable_core::checksum::crc32c_base64);
    if json {
        let location = done.object.as_ref().and_then(|o| o.media_link.clone());
        let out = serde_json::json!({
            "protocol": "gcs",
            "bytes": done.size,
            "status": done.status.as_u16(),
            "session": "<redacted>",
            "location": location.map(|l| redact_query(&l)),
            "crc32c": crc,
            "verified": {
                "size": done.verified.size,
                "crc32c": done.verified.crc32c,
                "md5": done.verified.md5,
            },
            "resumed_from": stats.resumed_from.unwrap_or(0),
            "requests": stats.requests,
            "retries": stats.retries,
        });
        println!("{out}");
    } else {
        let checked = if done.verified.crc32c {
            "CRC32C verified by the server"
        } else if crc.is_some() {
            "CRC32C sent for the server to check"
        } else {
            "no checksum"
        };
        let resumed = match stats.resumed_from {
            Some(k) => format!(", resumed from {}", human(k)),
            None => String::new(),
        };
        println!(
            "uploaded {} ({} bytes, HTTP {}): {checked}; {} requests, {} retries{resumed}",
            human(done.size),
            done.size,
            done.status.as_u16(),
            stats.requests,
            stats.retries,
        );
    }
}

/// A URL for output: without its query string (which may hold a signature).
fn redact_query(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => RedactedUri(&uri).to_string(),
        Err(_) => "<redacted>".into(),
    }
}

/// A jitter seed that differs between runs (the core has no randomness of its own).
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
