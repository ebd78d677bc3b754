//! `resumable ton`: a Twitter TON resumable upload (T1–T6).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;
use http::HeaderValue;
use resumable_auth::{CredentialKind, Credentials, EnvError, SignScope};
use resumable_core::ton::{TonCompletion, TonConfig, TonStart, TonUpload};
use resumable_core::{SavedState, Stats, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{
    self, Run, RunArgs, Started, StateFile, open_input, parse_headers, parse_url, redact_query,
    usage,
};
use crate::size::{human, parse_size};

/// Arguments of `resumable ton`.
#[derive(Args, Debug)]
#[command(
    after_help = "Authorization: OAuth 1.0a from X_CONSUMER_KEY, X_CONSUMER_SECRET, \
X_ACCESS_TOKEN and X_ACCESS_TOKEN_SECRET when set (every request is signed), else -H for the \
start request. Exit codes: 0 success, 1 upload failed, 2 bad usage or input, 130 interrupted."
)]
pub struct TonArgs {
    /// The file to upload (TON needs the size up front, so not stdin).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The bucket URL, e.g. `https://ton.twitter.com/1.1/ton/bucket/ta_partner`.
    #[arg(value_name = "BUCKET_URL")]
    pub(crate) bucket_url: String,
    /// The object's content type (sent as Content-Type and X-TON-Content-Type; default: from
    /// the file name, else application/octet-stream).
    #[arg(long, value_name = "MIME")]
    pub(crate) content_type: Option<String>,
    /// When the object expires, an RFC 1123 date (X-TON-Expires, at most 7 days ahead).
    #[arg(long, value_name = "DATE")]
    pub(crate) expires: Option<String>,
    /// The first chunk size; later chunks adapt to the rate (about 20 s each) within the
    /// server's minimum and maximum.
    #[arg(long, value_name = "SIZE", default_value = "4MiB")]
    pub(crate) chunk_size: String,
    /// Upload in one request (T1; files under 64 MiB).
    #[arg(long)]
    pub(crate) single: bool,
    /// An extra header for the start request, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub(crate) headers: Vec<String>,
    /// Print the outcome as one JSON object on stdout (also on failure).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// What a finished TON upload reports.
pub struct TonReport {
    /// The core's completion.
    pub done: TonCompletion,
    /// Requests, retries, where it resumed from.
    pub stats: Stats,
}

/// Runs `resumable ton`.
pub fn run(args: TonArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let report = execute(&args, interrupt)?;
    let (done, stats) = (&report.done, report.stats);
    let location = redact_query(&done.location.to_string());
    if args.json {
        let out = serde_json::json!({
            "ok": true,
            "protocol": "ton",
            "bytes": done.size,
            "status": done.status.as_u16(),
            "session": "<redacted>",
            "location": location,
            "resumed_from": stats.resumed_from.unwrap_or(0),
            "requests": stats.requests,
            "retries": stats.retries,
        });
        print_result(&out.to_string())
    } else {
        print_result(&format!(
            "uploaded {} ({} bytes, HTTP {}) to {location}; {} requests, {} retries",
            human(done.size),
            done.size,
            done.status.as_u16(),
            stats.requests,
            stats.retries,
        ))
    }
}

/// Runs one TON upload to its end (resuming from the saved state when there is one).
pub fn execute(args: &TonArgs, interrupt: Arc<AtomicBool>) -> Result<TonReport, Failure> {
    let bucket = parse_url(&args.bucket_url, "bucket URL")?;
    let chunk = parse_size(&args.chunk_size).map_err(|e| usage(format!("--chunk-size: {e}")))?;
    let content_type = match &args.content_type {
        Some(t) => t.clone(),
        None => mime_guess::from_path(&args.file)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_owned(),
    };
    let content_type =
        HeaderValue::from_str(&content_type).map_err(|_| usage("the content type is not valid"))?;
    if args.file.as_os_str() == "-" {
        return Err(usage(
            "TON needs the file's size up front: give a file, not stdin",
        ));
    }
    let mut input = open_input(&args.file)?;
    let total = input.total.unwrap_or(0);
    let destination = format!("{}|{}", args.single, args.bucket_url);
    let (state, saved) = StateFile::open(
        args.run.state.as_deref(),
        &input,
        "ton",
        &destination,
        &args.bucket_url,
    )?;
    let saved = saved.and_then(|s| match s.state {
        SavedState::Ton(state) => Some(state),
        _ => None,
    });

    let mut config = TonConfig::new(content_type, total);
    config.chunk_size = chunk;
    config.expires = args.expires.clone();
    config.start_headers = parse_headers(&args.headers)?;
    config.fingerprint = input.fingerprint.clone();
    args.run.apply(&mut config.retry)?;
    let resuming = saved.is_some();
    let start = match saved {
        Some(state) => TonStart::Resume(state),
        None if args.single => TonStart::Single {
            bucket_url: bucket.clone(),
        },
        None => TonStart::Resumable {
            bucket_url: bucket.clone(),
        },
    };
    let mut upload = TonUpload::new(start, config).map_err(|e| usage(e.to_string()))?;

    let signer = match Credentials::from_env_for(&[CredentialKind::OAuth1]) {
        Ok(credentials) => {
            let scope = SignScope::twitter()
                .allow(&origin(&bucket))
                .map_err(|e| usage(format!("cannot sign requests to the bucket URL: {e}")))?;
            Some(credentials.into_signer(scope))
        }
        Err(EnvError::Missing { .. }) => None,
        Err(e) => return Err(usage(e.to_string())),
    };

    let progress = Progress::new(!args.run.no_progress, input.total, &input.label);
    if resuming {
        progress.note("resuming the saved TON upload");
    }
    let run = Run {
        state: &state,
        progress: &progress,
        interrupt,
        signer,
    };
    match run::drive(
        &mut upload,
        input.source.as_mut(),
        input.total,
        run,
        &mut |_, _, _| {},
    ) {
        Ok(done) => Ok(TonReport {
            done,
            stats: upload.stats(),
        }),
        Err(e) => Err(run::failure(
            e,
            &upload,
            &args.file,
            &state,
            Started::default(),
        )),
    }
}

/// `scheme://authority/` of a URL: what the signer may sign (the bucket and its uploads).
fn origin(uri: &http::Uri) -> String {
    format!(
        "{}://{}/",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map_or("", |a| a.as_str())
    )
}
