//! `resumable s3`: an S3 multipart upload (S1–S12), several parts in flight, resumable from
//! the saved state, signed with AWS Signature Version 4.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;
use http::HeaderValue;
use resumable_auth::{AnySigner, AwsCredentials, AwsEnvError, AwsRegion, SigV4Signer, SignScope};
use resumable_blocking::Event;
use resumable_core::multipart::plan::MAX_PART_SIZE;
use resumable_core::multipart::upload::{Proof, S3Completion, S3Config, S3Upload};
use resumable_core::{Error, SavedState, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{
    self, Run, RunArgs, Started, StateFile, open_input, parse_headers, parse_url, usage,
};
use crate::size::{human, parse_size};

/// Arguments of `resumable s3`.
#[derive(Args, Debug)]
#[command(
    after_help = "Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for \
temporary credentials, AWS_SESSION_TOKEN; the region from AWS_REGION (or AWS_DEFAULT_REGION, \
default us-east-1). Without credentials requests are sent unsigned (for local test servers). \
Exit codes: 0 success, 1 upload failed, 2 bad usage or input, 130 interrupted (state saved: \
run the same command again to resume)."
)]
pub struct S3Args {
    /// The file to upload.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where to: s3://BUCKET/KEY.
    #[arg(value_name = "S3_URL")]
    url: String,
    /// The service endpoint, addressed path-style (ENDPOINT/BUCKET/KEY), for example a local
    /// server's http://127.0.0.1:9000 (default: https://s3.REGION.amazonaws.com).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Bytes per part, e.g. 8MiB (raised when the file needs more than 10,000 parts).
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    part_size: String,
    /// The server's smallest part: 5 MiB on S3; lower only for a server that allows it.
    #[arg(long, value_name = "SIZE", default_value = "5MiB")]
    min_part_size: String,
    /// Parts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: u32,
    /// The object's content type (default: from the file name, else application/octet-stream).
    #[arg(long, value_name = "MIME")]
    content_type: Option<String>,
    /// An extra header for every request, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Abort the saved upload of this file to this object (frees the parts stored so far).
    #[arg(long)]
    cancel: bool,
    /// Print the outcome as one JSON object on stdout (also on failure).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// `s3://BUCKET/KEY` → (bucket, key).
fn parse_s3_url(text: &str) -> Result<(String, String), Failure> {
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| usage("the destination must look like s3://BUCKET/KEY"))?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.to_owned(), key.to_owned()))
        }
        _ => Err(usage(
            "the destination must name a bucket and a key: s3://BUCKET/KEY",
        )),
    }
}

/// Runs `resumable s3`.
pub fn run(args: S3Args, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let (bucket, key) = parse_s3_url(&args.url)?;
    let part_size = parse_size(&args.part_size).map_err(|e| usage(format!("--part-size: {e}")))?;
    let min_part_size =
        parse_size(&args.min_part_size).map_err(|e| usage(format!("--min-part-size: {e}")))?;
    if min_part_size == 0 || min_part_size > MAX_PART_SIZE {
        return Err(usage("--min-part-size must be 1 byte to 5 GiB"));
    }
    if args.parallel == 0 || args.parallel > 64 {
        return Err(usage("--parallel must be 1 to 64"));
    }
    let region = match AwsRegion::from_env() {
        Ok(region) => region,
        Err(AwsEnvError::NoRegion) => {
            AwsRegion::new("us-east-1").map_err(|e| usage(e.to_string()))?
        }
        Err(e) => return Err(usage(e.to_string())),
    };
    let endpoint_text = args
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let endpoint = parse_url(&endpoint_text, "endpoint")?;
    if endpoint.query().is_some() {
        return Err(usage("the endpoint must not have a query"));
    }
    if args.file.as_os_str() == "-" {
        return Err(usage(
            "an upload in parts reads each part twice (to checksum it, then to send it): give a \
             file, not stdin",
        ));
    }
    let mut input = open_input(&args.file)?;
    let total = input.total.unwrap_or(0);
    let shown = format!("s3://{bucket}/{key}");
    let destination = format!("{endpoint_text}|{bucket}|{key}");
    let (state, saved) = StateFile::open(
        args.run.state.as_deref(),
        &input,
        "s3",
        &destination,
        &shown,
    )?;
    let saved = saved.and_then(|s| match s.state {
        SavedState::S3(state) => Some(state),
        _ => None,
    });

    let mut config = S3Config::new(endpoint.clone(), bucket.clone(), key.clone(), total);
    config.part_size = part_size;
    config.min_part_size = min_part_size;
    config.max_in_flight = args.parallel;
    config.headers = parse_headers(&args.headers)?;
    config.fingerprint = input.fingerprint.clone();
    let content_type = match &args.content_type {
        Some(t) => t.clone(),
        None => mime_guess::from_path(&args.file)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_owned(),
    };
    config.content_type = Some(
        HeaderValue::from_str(&content_type).map_err(|_| usage("the content type is not valid"))?,
    );
    args.run.apply(&mut config.retry)?;

    let progress = Progress::new(!args.run.no_progress, input.total, &input.label);
    let resuming = saved.is_some();
    if args.cancel && saved.is_none() {
        return Err(usage(format!(
            "there is no saved upload of this file to {shown} to cancel"
        )));
    }
    let mut upload = match saved {
        Some(s) => S3Upload::resume(config, s),
        None => S3Upload::new(config),
    }
    .map_err(|e| usage(e.to_string()))?;
    if args.cancel {
        upload.cancel();
    } else if resuming {
        progress.note("resuming the saved upload (asking the server which parts it holds)");
    }

    let signer = match AwsCredentials::from_env() {
        Ok(credentials) => {
            let origin = format!(
                "{}://{}/",
                endpoint.scheme_str().unwrap_or("https"),
                endpoint.authority().map_or("", |a| a.as_str())
            );
            let scope = SignScope::new()
                .allow(&origin)
                .map_err(|e| usage(format!("cannot sign requests to the endpoint: {e}")))?;
            Some(AnySigner::SigV4(SigV4Signer::new(
                credentials,
                region,
                scope,
            )))
        }
        Err(AwsEnvError::Missing) => None,
        Err(e) => return Err(usage(e.to_string())),
    };
    let run = Run {
        state: &state,
        progress: &progress,
        interrupt,
        signer,
    };
    // Sent and acknowledged bytes: parts go out in parallel, so the bar shows what the server
    // acknowledged and the message what was sent.
    let mut sent = 0u64;
    let mut narrate = |up: &S3Upload, event: &Event<'_>, progress: &Progress| {
        if let Event::Progress(p) = event {
            sent = p.total_sent;
        }
        if matches!(event, Event::Progress(_) | Event::Response { .. }) {
            progress.set(up.persisted(), Some(total));
            progress.detail(&format!(
                "{} sent, {} acknowledged",
                human(sent),
                human(up.persisted())
            ));
        }
    };
    let result = run::drive(
        &mut upload,
        input.source.as_mut(),
        input.total,
        run,
        &mut narrate,
    );
    match result {
        Ok(done) => report(args.json, &done, &upload, &shown),
        Err(resumable_blocking::DriveError::Upload(Error::Cancelled)) if args.cancel => {
            state.remove();
            if args.json {
                let out = serde_json::json!({
                    "ok": true,
                    "protocol": "s3",
                    "cancelled": true,
                    "bucket": bucket,
                    "key": key,
                });
                print_result(&out.to_string())
            } else {
                print_result(&format!(
                    "aborted the upload to {shown}; the parts stored are freed"
                ))
            }
        }
        Err(e) => Err(run::failure(
            e,
            &upload,
            &args.file,
            &state,
            Started::default(),
        )),
    }
}

fn report(json: bool, done: &S3Completion, upload: &S3Upload, shown: &str) -> Result<(), Failure> {
    let stats = upload.stats();
    let crc = resumable_core::checksum::crc32c_base64(done.crc32c);
    let checked = match done.proof {
        Proof::CompleteAnswer => "CRC32C confirmed by the server's answer",
        Proof::Head => "CRC32C confirmed by reading the object's checksum back",
        _ => "CRC32C confirmed",
    };
    if json {
        let out = serde_json::json!({
            "ok": true,
            "protocol": "s3",
            "bucket": done.bucket,
            "key": done.key,
            "bytes": done.size,
            "parts": done.parts,
            "etag": done.etag,
            "crc32c": crc,
            "verified": { "crc32c": true, "by": match done.proof {
                Proof::CompleteAnswer => "complete",
                _ => "head",
            } },
            "resumed_from": stats.resumed_from.unwrap_or(0),
            "requests": stats.requests,
            "retries": stats.retries,
        });
        print_result(&out.to_string())
    } else {
        let resumed = match stats.resumed_from {
            Some(k) => format!(", resumed with {} already held", human(k)),
            None => String::new(),
        };
        print_result(&format!(
            "uploaded {} ({} bytes) to {shown} in {} parts: {checked}; {} requests, {} retries{resumed}",
            human(done.size),
            done.size,
            done.parts,
            stats.requests,
            stats.retries,
        ))
    }
}
