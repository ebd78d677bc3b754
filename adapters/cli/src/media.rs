//! `resumable media`: Twitter/X `media/upload` chunked upload (M1–M7), v1.1 or v2.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Args, ValueEnum};
use resumable_auth::{CredentialKind, Credentials, EnvError, SignScope};
use resumable_core::media::{
    ApiForm, ApiVersion, MediaCompletion, MediaConfig, MediaUpload, ProcessingState,
};
use resumable_core::{SavedState, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{
    self, Run, RunArgs, Started, StateFile, open_input, parse_headers, parse_url, seed, unix_now,
    usage,
};
use crate::size::{human, parse_size};

/// Which form of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// `upload.twitter.com/1.1/media/upload.json` (form fields, OAuth 1.0a).
    V1,
    /// `api.x.com/2/media/upload` (JSON, OAuth 2 user token or OAuth 1.0a).
    V2,
}

/// Arguments of `resumable media`.
#[derive(Args, Debug)]
#[command(
    after_help = "Authorization: OAuth 1.0a from X_CONSUMER_KEY, X_CONSUMER_SECRET, \
X_ACCESS_TOKEN and X_ACCESS_TOKEN_SECRET when set; for --api v2 also a user token in \
X_BEARER_TOKEN. Exit codes: 0 success, 1 upload failed, 2 bad usage or input, 130 interrupted."
)]
pub struct MediaArgs {
    /// The file to upload (the size is declared at INIT, so not stdin).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The media type, e.g. video/mp4, image/gif (default: from the file name).
    #[arg(long, value_name = "MIME")]
    pub(crate) media_type: Option<String>,
    /// The media category, e.g. tweet_video, tweet_gif, tweet_image, amplify_video (default:
    /// from the media type when it was guessed from the file name).
    #[arg(long, value_name = "C")]
    pub(crate) category: Option<String>,
    /// The API form (default: v2; with --endpoint, the form its address names: v1 for an
    /// upload.json URL).
    #[arg(long, value_enum)]
    pub(crate) api: Option<Api>,
    /// The endpoint: the upload.json URL for v1, the /2/media/upload base for v2 (for
    /// example a local server's).
    #[arg(long, value_name = "URL", conflicts_with = "api_base")]
    pub(crate) endpoint: Option<String>,
    /// The API host for every Twitter command (for example a local server's,
    /// `http://127.0.0.1:PORT`): v1 uses `{base}/1.1/media/upload.json`, v2
    /// `{base}/2/media/upload`.
    #[arg(long, value_name = "URL")]
    pub(crate) api_base: Option<String>,
    /// A user id that may also use the media (repeatable).
    #[arg(long = "additional-owner", value_name = "ID")]
    pub(crate) additional_owners: Vec<String>,
    /// Bytes per APPEND segment, at most 5,000,000 (raised when the file needs more than 1000).
    #[arg(long, value_name = "SIZE", default_value = "4MiB")]
    pub(crate) segment_size: String,
    /// How many APPEND segments may be on their way at once, each on its own connection
    /// (1 to 8; segments may arrive in any order, the server puts them in place by number).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub(crate) parallel: u32,
    /// An extra header for every request, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub(crate) headers: Vec<String>,
    /// Print the outcome as one JSON object on stdout (also on failure).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// What a finished media upload reports.
pub struct MediaReport {
    /// The core's completion.
    pub done: MediaCompletion,
    /// Requests, retries, status polls.
    pub stats: resumable_core::Stats,
    /// Where a resumed upload went on from (the next unacknowledged segment's offset).
    pub resumed_from: Option<u64>,
    /// The API form used.
    pub form: ApiForm,
}

/// The media type and category: as given, else guessed from the file name (as xurl does),
/// the category then following the type (GIFs are `tweet_gif`, other images `tweet_image`,
/// videos `tweet_video`).
fn media_type_and_category(args: &MediaArgs) -> Result<(String, Option<String>), Failure> {
    if let Some(t) = &args.media_type {
        return Ok((t.clone(), args.category.clone()));
    }
    let guessed = mime_guess::from_path(&args.file)
        .first_raw()
        .filter(|t| t.starts_with("image/") || t.starts_with("video/"))
        .ok_or_else(|| {
            usage(
                "cannot tell the media type from the file name: give --media-type, e.g. \
                 video/mp4 or image/png",
            )
        })?;
    let category = args.category.clone().or_else(|| {
        let category = match guessed {
            "image/gif" => "tweet_gif",
            t if t.starts_with("image/") => "tweet_image",
            _ => "tweet_video",
        };
        Some(category.to_owned())
    });
    Ok((guessed.to_owned(), category))
}

/// Runs one media upload to its end (resuming from the saved state when there is one).
pub fn execute(args: &MediaArgs, interrupt: Arc<AtomicBool>) -> Result<MediaReport, Failure> {
    // v2 unless asked otherwise (v1.1 media/upload is deprecated for most access tiers); an
    // explicit endpoint says its own form.
    let form = args.api.unwrap_or(match &args.endpoint {
        Some(url)
            if url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.path().ends_with("/upload.json")) =>
        {
            Api::V1
        }
        _ => Api::V2,
    });
    let endpoint = match (&args.endpoint, &args.api_base) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(base)) => Some(match form {
            Api::V1 => format!("{}/1.1/media/upload.json", base.trim_end_matches('/')),
            Api::V2 => format!("{}/2/media/upload", base.trim_end_matches('/')),
        }),
        (None, None) => None,
    };
    let api = match (&form, &endpoint) {
        (Api::V1, None) => ApiVersion::v1_1(),
        (Api::V2, None) => ApiVersion::v2(),
        (Api::V1, Some(url)) => ApiVersion::V1_1 {
            endpoint: parse_url(url, "endpoint")?,
        },
        (Api::V2, Some(url)) => ApiVersion::V2 {
            base: parse_url(url, "endpoint")?,
        },
    };
    let endpoint = match &api {
        ApiVersion::V1_1 { endpoint } => endpoint.clone(),
        ApiVersion::V2 { base } => base.clone(),
    };
    let segment =
        parse_size(&args.segment_size).map_err(|e| usage(format!("--segment-size: {e}")))?;
    if args.file.as_os_str() == "-" {
        return Err(usage(
            "media uploads declare the size at INIT: give a file, not stdin",
        ));
    }
    let mut input = open_input(&args.file)?;
    let total = input.total.unwrap_or(0);
    let destination = format!("{form:?}|{endpoint}");
    let (state, saved) = StateFile::open(
        args.run.state.as_deref(),
        &input,
        "media",
        &destination,
        &endpoint.to_string(),
    )?;

    let (media_type, category) = media_type_and_category(args)?;
    let mut config = MediaConfig::new(api, total, media_type);
    config.media_category = category;
    config.additional_owners = args.additional_owners.clone();
    config.segment_size = segment;
    config.max_in_flight = args.parallel;
    config.headers = parse_headers(&args.headers)?;
    config.fingerprint = input.fingerprint.clone();
    config.boundary_seed = seed();
    args.run.apply(&mut config.retry)?;
    let form = config.api.form();
    let progress = Progress::new(!args.run.no_progress, input.total, &input.label);
    // M5: an expired media id takes no more APPENDs: start over with a new INIT.
    let saved = saved
        .and_then(|s| match s.state {
            SavedState::Media(state) => Some(state),
            _ => None,
        })
        .filter(|s| {
            let expired = s.is_expired(unix_now());
            if expired {
                progress.note(&format!(
                    "the saved media id {} has expired; starting a new upload",
                    s.media_id
                ));
            }
            !expired
        });
    let resumed_from = saved.as_ref().map(|s| s.next_offset);
    let mut upload = match saved {
        Some(state) => MediaUpload::resume(config, state),
        None => MediaUpload::new(config),
    }
    .map_err(|e| usage(e.to_string()))?;

    let accepted: &[CredentialKind] = match form {
        ApiForm::V1_1 => &[CredentialKind::OAuth1],
        ApiForm::V2 => &[CredentialKind::OAuth1, CredentialKind::Bearer],
    };
    let signer = match Credentials::from_env_for(accepted) {
        Ok(credentials) => {
            let scope = SignScope::twitter()
                .allow(&format!(
                    "{}://{}/",
                    endpoint.scheme_str().unwrap_or("https"),
                    endpoint.authority().map_or("", |a| a.as_str())
                ))
                .map_err(|e| usage(format!("cannot sign requests to the endpoint: {e}")))?;
            Some(credentials.into_signer(scope))
        }
        // The real API refuses unsigned requests: say so before the first one. A local or
        // other endpoint may need none.
        Err(e @ EnvError::Missing { .. }) if args.endpoint.is_none() && args.api_base.is_none() => {
            return Err(usage(e.to_string()));
        }
        Err(EnvError::Missing { .. }) => None,
        Err(e) => return Err(usage(e.to_string())),
    };

    if resumed_from.is_some() {
        progress.note("resuming the saved media upload");
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
        Ok(done) => Ok(MediaReport {
            done,
            stats: upload.stats(),
            resumed_from,
            form,
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

/// Runs `resumable media`.
pub fn run(args: MediaArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let report = execute(&args, interrupt)?;
    let (done, stats, resumed_from, form) =
        (&report.done, report.stats, report.resumed_from, report.form);
    let processing = done.processing.as_ref().map(|p| match p.state {
        ProcessingState::Succeeded => "succeeded",
        ProcessingState::Failed => "failed",
        ProcessingState::InProgress => "in_progress",
        ProcessingState::Pending => "pending",
    });
    if args.json {
        let out = serde_json::json!({
            "ok": true,
            "protocol": "media",
            "api": match form { ApiForm::V1_1 => "v1", ApiForm::V2 => "v2" },
            "bytes": done.size,
            "media_id": done.media_id,
            "media_key": done.media_key,
            "processing": processing,
            "resumed_from": resumed_from.unwrap_or(0),
            "requests": stats.requests,
            "retries": stats.retries,
            "status_polls": stats.status_polls,
        });
        print_result(&out.to_string())
    } else {
        let processed = match processing {
            Some(state) => format!(
                "processing {state} after {} status polls",
                stats.status_polls
            ),
            None => "no processing needed".to_owned(),
        };
        print_result(&format!(
            "uploaded {} ({} bytes) as media {}: {processed}; {} requests, {} retries",
            human(done.size),
            done.size,
            done.media_id,
            stats.requests,
            stats.retries,
        ))
    }
}
