//! `resumable compliance`: a Twitter/X batch compliance job end to end (C1–C3): create the
//! job, upload the ids to its `upload_url` through GCS, poll it until it is complete, then
//! stream its JSON Lines results from `download_url` and summarise their actions.
//!
//! The state file keeps the job from the moment it exists until its results are downloaded,
//! so a run that was interrupted anywhere (Ctrl-C, `kill -9`, a network failure) continues
//! the same job when run again: never a second job for the same file.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use http::Uri;
use resumable_auth::{BEARER_TOKEN, CredentialKind, Credentials, EnvError, SignScope};
use resumable_blocking::{DriveError, Event};
use resumable_core::compliance::{
    CompletedJob, ComplianceConfig, ComplianceJob, DEFAULT_API_BASE, JobError, JobType, Phase,
    SavedPhase,
};
use resumable_core::{Error, SavedState, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{self, Run, RunArgs, Started, StateFile, open_input, parse_url, unix_now, usage};
use crate::size::{human, parse_duration};

/// What the file's ids are (C1 `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Type {
    /// Post (Tweet) ids.
    Tweets,
    /// User ids.
    Users,
}

impl From<Type> for JobType {
    fn from(t: Type) -> Self {
        match t {
            Type::Tweets => JobType::Tweets,
            Type::Users => JobType::Users,
        }
    }
}

/// Arguments of `resumable compliance`.
#[derive(Args, Debug)]
#[command(
    after_help = "Authorization: the app-only Bearer token in X_BEARER_TOKEN (required). It is \
sent to the API's /2/compliance/jobs requests only, never to the upload or download URLs. \
Exit codes: 0 the job completed and its results were downloaded, 1 a stage failed (create, \
upload, poll, download) or the job failed or expired, 2 bad usage or input, 130 interrupted \
(run the same command again to continue the same job)."
)]
pub struct ComplianceArgs {
    /// The file of ids, one per line.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// What the ids are.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    job_type: Type,
    /// A name for the job (at most 64 characters).
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// The API's address (for example a local server's); a URL ending in /2/compliance/jobs
    /// is taken as its base.
    #[arg(long, value_name = "URL", default_value = DEFAULT_API_BASE)]
    api_base: String,
    /// Where the JSON Lines results go (default: stdout).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Print the outcome as one JSON object on stdout, also on failure (needs --out for the
    /// results).
    #[arg(long)]
    pub(crate) json: bool,
    /// Bytes per upload request: a multiple of 256 KiB.
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    chunk_size: String,
    /// How long to poll an unfinished job before giving up (e.g. 90m, 2h, 3600s); the job
    /// is kept, and running the same command again polls it again.
    #[arg(long, value_name = "DURATION", default_value = "2h")]
    poll_deadline: String,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Runs `resumable compliance`.
pub fn run(args: ComplianceArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    if args.json && args.out.is_none() {
        return Err(usage(
            "--json prints the outcome on stdout: give --out PATH for the results",
        ));
    }
    if args.file.as_os_str() == "-" {
        return Err(usage(
            "give a file of ids, not stdin: a job is resumed by the file's identity",
        ));
    }
    let (api_base, base_text) = api_base(&args.api_base)?;
    let chunk = crate::gcs::chunk_size(&args.chunk_size)?;
    let poll_deadline = parse_duration(&args.poll_deadline)
        .and_then(|d| {
            (!d.is_zero())
                .then_some(d)
                .ok_or_else(|| "must be greater than zero".to_owned())
        })
        .map_err(|e| usage(format!("--poll-deadline: {e}")))?;
    let job_type = JobType::from(args.job_type);

    // C1, C3: app-only Bearer, signed on API requests only.
    let credentials = match Credentials::from_env_for(&[CredentialKind::Bearer]) {
        Ok(credentials) => credentials,
        Err(EnvError::Missing { .. }) => {
            return Err(usage(format!(
                "{BEARER_TOKEN} is not set: compliance jobs need an app-only Bearer token"
            )));
        }
        Err(e) => return Err(usage(e.to_string())),
    };
    let scope = SignScope::new()
        .allow(&format!("{base_text}/2/compliance/jobs"))
        .map_err(|e| usage(format!("cannot sign requests to the API base: {e}")))?;
    let signer = credentials.into_signer(scope);

    let mut input = open_input(&args.file)?;
    let destination = format!(
        "{job_type}|{base_text}|{}",
        args.name.as_deref().unwrap_or("")
    );
    let (state, saved) = StateFile::open(
        args.run.state.as_deref(),
        &input,
        "compliance",
        &destination,
        &base_text,
    )?;
    let saved = saved.and_then(|s| match s.state {
        SavedState::Compliance(state) => Some(state),
        _ => None,
    });
    if let Some(saved) = &saved {
        // C2: an unfinished upload cannot go on past upload_expires_at.
        if let Err(e) = saved.check_upload_url(unix_now()) {
            state.remove();
            return Err(Failure::upload(
                "compliance_job",
                vec![
                    format!("cannot continue the saved job: {e}"),
                    "the next run creates a new job".into(),
                ],
            ));
        }
    }

    let mut config = ComplianceConfig::new(job_type, input.total);
    config.api_base = api_base;
    config.name = args.name.clone();
    config.chunk_size = chunk;
    config.poll_deadline = poll_deadline;
    config.fingerprint = input.fingerprint.clone();
    args.run.apply(&mut config.retry)?;
    let resumed = saved.as_ref().map(|s| (s.job.id.clone(), s.phase));
    let mut job = match saved {
        Some(saved) => ComplianceJob::resume(config, saved).map_err(|e| {
            // A state that cannot be used would stop every later run: drop it.
            state.remove();
            usage(format!(
                "the saved job cannot be continued ({e}); its state was removed, so the next \
                 run creates a new job"
            ))
        })?,
        None => ComplianceJob::new(config).map_err(|e| usage(e.to_string()))?,
    };

    let progress = Progress::new(!args.run.no_progress, input.total, &input.label);
    if let Some((id, phase)) = &resumed {
        let doing = match phase {
            SavedPhase::Upload => "resuming its upload",
            SavedPhase::Poll => "polling it",
        };
        progress.note(&format!("continuing compliance job {id}: {doing}"));
    }
    let stage = Cell::new(job.phase());
    let mut narrator = Narrator {
        total: input.total,
        announced: job.job().is_some(),
        shown_polls: 0,
    };
    let run = Run {
        state: &state,
        progress: &progress,
        interrupt: interrupt.clone(),
        signer: Some(signer),
    };
    let result = run::drive(
        &mut job,
        input.source.as_mut(),
        input.total,
        run,
        &mut |job: &ComplianceJob, event: &Event<'_>, progress: &Progress| {
            if job.phase() != Phase::Done {
                stage.set(job.phase());
            }
            narrator.narrate(job, event, progress);
        },
    );
    let done = match result {
        Ok(done) => done,
        Err(DriveError::Upload(Error::Compliance(verdict))) => {
            return Err(job_verdict(&state, &job, verdict));
        }
        Err(DriveError::Upload(e)) => return Err(stage_failure(&state, &job, stage.get(), &e)),
        Err(e) => {
            return Err(run::failure(
                e,
                &job,
                &args.file,
                &state,
                Started::default(),
            ));
        }
    };

    // Keep the job until its results are safely downloaded: a run interrupted from here on
    // polls the same job once more and downloads again.
    if let Some(saved) = job.resume_state() {
        state.save(saved.into()).map_err(|e| {
            Failure::upload(
                "local",
                vec![format!("saving the resume state failed: {e}")],
            )
        })?;
    }
    let id = done.job.id.clone();
    let downloaded = match download(&done, args.out.as_deref(), args.run.max_retries, &interrupt) {
        Ok(d) => d,
        Err(DownloadError::Interrupted) => {
            return Err(Failure::interrupted(format!(
                "compliance job {id} is complete; run the same command again to download its \
                 results"
            ))
            .with_resume(true, job.total(), state.path().map(Path::to_path_buf)));
        }
        Err(e) => {
            return Err(Failure::upload(
                "download",
                vec![
                    format!("downloading the results of compliance job {id} failed: {e}"),
                    "the job is kept: run the same command again to download them".into(),
                ],
            )
            .with_resume(true, job.total(), state.path().map(Path::to_path_buf)));
        }
    };
    state.remove();
    report(&args, &job, &done, &downloaded, resumed.is_some())
}

/// The job's own lines while it runs: its creation, and each status poll.
struct Narrator {
    total: Option<u64>,
    announced: bool,
    shown_polls: u32,
}

impl Narrator {
    fn narrate(&mut self, job: &ComplianceJob, event: &Event<'_>, progress: &Progress) {
        match event {
            Event::Sending { .. } | Event::Response { .. } => {
                if let (false, Some(info)) = (self.announced, job.job()) {
                    self.announced = true;
                    progress.note(&format!(
                        "created compliance job {} ({}); uploading {}",
                        info.id,
                        info.job_type,
                        human(self.total.unwrap_or(0))
                    ));
                }
                let polls = job.stats().status_polls;
                if polls > self.shown_polls {
                    self.shown_polls = polls;
                    if let Some(info) = job.job() {
                        progress.note(&format!(
                            "compliance job {}: {} (status poll {polls})",
                            info.id, info.status
                        ));
                    }
                }
            }
            // A poll's wait (a retry's wait is described by the shared handling).
            Event::Waiting { until }
                if job.phase() == Phase::Poll
                    && job.last_retry().is_none_or(|r| r.until != *until) =>
            {
                let secs = until
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64();
                progress.note(&format!("next status poll in {secs:.0} s"));
            }
            _ => {}
        }
    }
}

/// The job ran its course without completing (C3): failed, expired, its upload URL
/// expired, or the poll deadline passed (then it is kept to poll again).
fn job_verdict(state: &StateFile, job: &ComplianceJob, verdict: JobError) -> Failure {
    let mut lines = vec![verdict.to_string()];
    if verdict.is_resumable() && job.resume_state().is_some() && state.path().is_some() {
        if let Some(saved) = job.resume_state() {
            let _ = state.save(saved.into());
        }
        lines.push("the job is kept: run the same command again to poll it again".into());
        return Failure::upload("compliance_job", lines).with_resume(
            true,
            job.total(),
            state.path().map(Path::to_path_buf),
        );
    }
    state.remove();
    lines.push(match verdict {
        JobError::Failed { .. } => {
            "check that the file holds one numeric id per line; the next run creates a new job"
                .into()
        }
        _ => "the next run creates a new job".into(),
    });
    Failure::upload("compliance_job", lines)
}

/// A stage broke (the network, a refusal, a protocol violation): say which, keep the job
/// when it can be continued.
fn stage_failure(
    state: &StateFile,
    job: &ComplianceJob,
    stage: Phase,
    error: &resumable_core::Error,
) -> Failure {
    let id = job.job().map_or_else(String::new, |j| j.id.clone());
    let what = match stage {
        Phase::Create => "creating the compliance job failed".to_owned(),
        Phase::Upload => format!("uploading the ids of compliance job {id} failed"),
        Phase::Poll | Phase::Done => format!("polling compliance job {id} failed"),
    };
    let mut lines = vec![format!("{what}: {error}")];
    let kind = run::error_kind(error);
    match (job.resume_state(), state.path()) {
        (Some(saved), Some(p)) if error.is_resumable() => {
            let _ = state.save(saved.into());
            lines.push(format!(
                "the job is kept: run the same command again to continue it (resume state: {})",
                p.display()
            ));
            Failure::upload(kind, lines).with_resume(true, Some(job.persisted()), Some(p.into()))
        }
        _ => {
            state.remove();
            if job.job().is_some() {
                lines.push("the next run creates a new job".into());
            }
            Failure::upload(kind, lines)
        }
    }
}

/// What the download found.
#[derive(Debug, Default)]
struct Downloaded {
    /// Bytes of results.
    bytes: u64,
    /// Result lines.
    results: u64,
    /// Lines per `action` value.
    actions: BTreeMap<String, u64>,
    /// Lines per `reason` value.
    reasons: BTreeMap<String, u64>,
    /// Lines that are not JSON objects.
    unreadable: u64,
    /// GET requests sent.
    requests: u64,
    /// Of which retries.
    retries: u64,
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
enum DownloadError {
    /// The server refused (the URL expired, or the results are gone).
    Status(u16, String),
    /// The network failed, or kept failing.
    Transport(String),
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
            DownloadError::Transport(why) => write!(f, "{why}"),
            DownloadError::Write(e) => write!(f, "writing the results failed: {e}"),
            DownloadError::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// One attempt's failure: may another attempt fix it?
enum Attempt {
    Retry(String, Option<Duration>),
    Fatal(DownloadError),
}

/// Streams the JSON Lines results from `download_url` (C3: no credentials) to `out` (stdout
/// when `None`), counting them. A file is written beside its final name and renamed at the
/// end; failures before any result reached stdout, or any failure when writing a file, are
/// retried with backoff from the start.
fn download(
    done: &CompletedJob,
    out: Option<&Path>,
    max_retries: u32,
    interrupt: &AtomicBool,
) -> Result<Downloaded, DownloadError> {
    let url = done.job.download_url.expose();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("resumable/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let part = out.map(|p| {
        let name = p
            .file_name()
            .map_or_else(|| "results".into(), |n| n.to_string_lossy().into_owned());
        p.with_file_name(format!(".{name}.part"))
    });
    let mut stats = Downloaded::default();
    let mut wait = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        if interrupt.load(Ordering::SeqCst) {
            return Err(DownloadError::Interrupted);
        }
        stats.requests += 1;
        let mut counted = Downloaded {
            requests: stats.requests,
            retries: stats.retries,
            ..Downloaded::default()
        };
        let attempt = match &part {
            Some(part) => {
                let file = File::create(part).map_err(DownloadError::Write)?;
                let mut writer = io::BufWriter::new(file);
                let result = fetch(&agent, url, &mut writer, &mut counted, interrupt);
                let flushed = writer
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all());
                match (result, flushed) {
                    (Ok(()), Ok(())) => {
                        let target = out.unwrap_or(part);
                        fs::rename(part, target).map_err(DownloadError::Write)?;
                        return Ok(counted);
                    }
                    (Ok(()), Err(e)) => Attempt::Fatal(DownloadError::Write(e)),
                    (Err(attempt), _) => attempt,
                }
            }
            None => {
                let stdout = io::stdout();
                let mut writer = stdout.lock();
                match fetch(&agent, url, &mut writer, &mut counted, interrupt) {
                    Ok(()) => {
                        writer.flush().map_err(DownloadError::Write)?;
                        return Ok(counted);
                    }
                    // Results already on stdout cannot be taken back.
                    Err(Attempt::Retry(why, _)) if counted.bytes > 0 => {
                        Attempt::Fatal(DownloadError::Transport(why))
                    }
                    Err(attempt) => attempt,
                }
            }
        };
        match attempt {
            Attempt::Fatal(e) => {
                if let Some(part) = &part {
                    let _ = fs::remove_file(part);
                }
                return Err(e);
            }
            Attempt::Retry(why, after) => {
                failures += 1;
                if failures > max_retries {
                    if let Some(part) = &part {
                        let _ = fs::remove_file(part);
                    }
                    return Err(DownloadError::Transport(format!(
                        "gave up after {failures} failed attempts: {why}"
                    )));
                }
                stats.retries += 1;
                let pause = after.map_or(wait, |a| a.min(Duration::from_secs(60)).max(wait));
                sleep_interruptibly(pause, interrupt);
                wait = (wait * 2).min(Duration::from_secs(32));
            }
        }
    }
}

/// One GET of the results, written to `out` line by line.
fn fetch(
    agent: &ureq::Agent,
    url: &Uri,
    out: &mut dyn io::Write,
    counted: &mut Downloaded,
    interrupt: &AtomicBool,
) -> Result<(), Attempt> {
    let response = agent
        .get(url.to_string())
        .call()
        .map_err(|e| Attempt::Retry(format!("the request failed: {}", describe(&e)), None))?;
    let status = response.status().as_u16();
    if status != 200 {
        let after = resumable_core::retry::retry_after(response.headers());
        let mut body = Vec::new();
        let _ = response
            .into_body()
            .into_reader()
            .take(4096)
            .read_to_end(&mut body);
        let message = resumable_core::response::server_message(&body).unwrap_or_default();
        return Err(match status {
            408 | 429 | 500 | 502 | 503 | 504 => {
                Attempt::Retry(format!("the server answered HTTP {status}"), after)
            }
            _ => Attempt::Fatal(DownloadError::Status(status, message)),
        });
    }
    let mut reader = BufReader::with_capacity(256 * 1024, response.into_body().into_reader());
    let mut line = Vec::new();
    loop {
        if interrupt.load(Ordering::SeqCst) {
            return Err(Attempt::Fatal(DownloadError::Interrupted));
        }
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Attempt::Retry(format!("the download was cut short: {e}"), None))?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&line)
            .map_err(|e| Attempt::Fatal(DownloadError::Write(e)))?;
        counted.bytes += n as u64;
        counted.count(&line);
    }
}

/// A ureq error in words, without the URL (a capability).
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        _ => "transport error".into(),
    }
}

fn sleep_interruptibly(pause: Duration, interrupt: &AtomicBool) {
    let end = Instant::now() + pause;
    while Instant::now() < end && !interrupt.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
}

/// The outcome: the JSON object on stdout with `--json`; the summary on stderr always.
fn report(
    args: &ComplianceArgs,
    job: &ComplianceJob,
    done: &CompletedJob,
    downloaded: &Downloaded,
    resumed: bool,
) -> Result<(), Failure> {
    let stats = job.stats();
    let out = args
        .out
        .as_ref()
        .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
    let tally = |counts: &BTreeMap<String, u64>| {
        counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let written = match &args.out {
        Some(p) => format!("written to {}", p.display()),
        None => "written to stdout".into(),
    };
    eprintln!(
        "compliance job {} ({}) {}: {} results from {} of ids, {written}; {} requests, {} retries",
        done.job.id,
        done.job.job_type,
        done.job.status,
        downloaded.results,
        human(done.bytes),
        stats.requests + downloaded.requests,
        stats.retries + downloaded.retries,
    );
    if !downloaded.actions.is_empty() {
        eprintln!("  actions: {}", tally(&downloaded.actions));
        eprintln!("  reasons: {}", tally(&downloaded.reasons));
    }
    if downloaded.unreadable > 0 {
        eprintln!("  {} lines were not JSON objects", downloaded.unreadable);
    }
    if args.json {
        let json = serde_json::json!({
            "ok": true,
            "protocol": "compliance",
            "job_id": done.job.id,
            "type": done.job.job_type.as_str(),
            "status": done.job.status.as_str(),
            "bytes": done.bytes,
            "results": downloaded.results,
            "actions": downloaded.actions,
            "reasons": downloaded.reasons,
            "out": out,
            "download_bytes": downloaded.bytes,
            "download_expires_at": done.job.download_expires_at,
            "polls": stats.status_polls,
            "resumed": resumed,
            "requests": stats.requests + downloaded.requests,
            "retries": stats.retries + downloaded.retries,
        });
        print_result(&json.to_string())?;
    }
    Ok(())
}

/// The API base from `--api-base`: absolute http(s) without a query; a URL ending in
/// `/2/compliance/jobs` (what a test server names) is taken as its base.
fn api_base(text: &str) -> Result<(Uri, String), Failure> {
    let uri = parse_url(text, "API base")?;
    if uri.query().is_some() {
        return Err(usage("the API base must not have a query"));
    }
    let path = uri.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/2/compliance/jobs")
        .unwrap_or(path)
        .trim_end_matches('/');
    let base = format!(
        "{}://{}{path}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map_or("", |a| a.as_str())
    );
    let parsed = base
        .parse()
        .map_err(|_| usage("the API base is not a valid URL"))?;
    Ok((parsed, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_takes_the_jobs_url_as_its_base() {
        for (given, base) in [
            ("https://api.x.com", "https://api.x.com"),
            ("https://api.x.com/", "https://api.x.com"),
            ("http://127.0.0.1:9/2/compliance/jobs", "http://127.0.0.1:9"),
            (
                "http://127.0.0.1:9/x/2/compliance/jobs/",
                "http://127.0.0.1:9/x",
            ),
        ] {
            assert_eq!(api_base(given).unwrap().1, base, "{given}");
        }
        assert!(api_base("https://api.x.com/?a=1").is_err());
        assert!(api_base("api.x.com").is_err());
    }

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
