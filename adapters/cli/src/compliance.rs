//! `resumable compliance`: a Twitter/X batch compliance job end to end (C1–C3): create the
//! job, upload the ids to its `upload_url` through GCS, poll it until it is complete, then
//! stream its JSON Lines results from `download_url` and summarise their actions.
//!
//! The state file keeps the job from the moment it exists until its results are downloaded,
//! so a run that was interrupted anywhere (Ctrl-C, `kill -9`, a network failure) continues
//! the same job when run again: never a second job for the same file.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

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
use crate::results::{DownloadError, Downloaded, download};
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
    let policy = config.retry.clone();
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
    let downloaded = match download(&done, args.out.as_deref(), policy, &progress, &interrupt) {
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
}
