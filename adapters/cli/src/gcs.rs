//! `resumable gcs`: a Google Cloud Storage resumable upload (G1–G12).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;
use http::{HeaderMap, HeaderValue, Uri};
use resumable_core::chunk::{GCS_GRANULE, round_to_granule};
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload, Start};
use resumable_core::{SavedState, SessionUri, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{
    self, Run, RunArgs, Started, StateFile, open_input, parse_headers, parse_url, redact_query,
    usage,
};
use crate::size::{human, parse_size};

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
    /// Bytes per request: a multiple of 256 KiB, e.g. 256KiB, 8MiB, 1048576. Default: a file
    /// goes in one request (after a failure, one more from what the server holds); stdin in
    /// 8 MiB requests, each kept in memory until it is acknowledged.
    #[arg(long, value_name = "SIZE")]
    chunk_size: Option<String>,
    /// The object's content type (default: from the file name, else application/octet-stream).
    #[arg(long, value_name = "MIME")]
    content_type: Option<String>,
    /// An extra header for the start request, 'Name: value' (repeatable; e.g. Authorization).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Print the outcome as one JSON object on stdout (also on failure).
    #[arg(long)]
    pub(crate) json: bool,
    /// On resume, do not read the already uploaded part of the file again to check that it
    /// has not changed (faster for a huge file; you accept that the stored object may then mix
    /// two versions of it).
    #[arg(long)]
    no_resume_check: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
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

/// Bytes per request from stdin when `--chunk-size` is not given.
const STREAM_CHUNK: u64 = 8 << 20;

/// `--chunk-size` of a GCS upload (also the compliance upload's): a multiple of 256 KiB (G4).
pub(crate) fn chunk_size(text: &str) -> Result<u64, Failure> {
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
    /// Bytes per request (a multiple of 256 KiB); `None`: one request for a file, 8 MiB
    /// requests from stdin.
    pub chunk: Option<u64>,
    /// The object's content type.
    pub content_type: HeaderValue,
    /// Extra headers for the start request.
    pub start_headers: HeaderMap,
    /// On resume, read the uploaded part again and compare it with the saved checksum.
    pub recheck: bool,
    /// The state file, progress and retry options.
    pub run: RunArgs,
}

/// What a finished upload reports.
pub struct Report {
    /// The core's completion.
    pub done: GcsCompletion,
    /// Requests, retries, where it resumed from.
    pub stats: resumable_core::Stats,
}

/// Runs `resumable gcs`.
pub fn run(args: GcsArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let job = Job {
        chunk: args.chunk_size.as_deref().map(chunk_size).transpose()?,
        content_type: content_type(&args)?,
        start_headers: parse_headers(&args.headers)?,
        file: args.file,
        url: args.url,
        session: args.session,
        recheck: !args.no_resume_check,
        run: args.run,
    };
    let report = execute(&job, interrupt)?;
    report_success(args.json, &job, &report)
}

/// Refuses URLs that are not what `resumable gcs` takes, saying what is meant instead.
fn check_url(url: &str, session: bool) -> Result<Uri, Failure> {
    if url.starts_with("gs://") {
        return Err(Failure::usage_lines(
            "usage",
            vec![
                "a gs:// URL names an object, not an upload URL".into(),
                "get a signed upload URL with: gcloud storage sign-url --http-verb=POST \
                 --headers=x-goog-resumable=start gs://BUCKET/OBJECT"
                    .into(),
                "or use the JSON API with a token: resumable gcs FILE \
                 'https://storage.googleapis.com/upload/storage/v1/b/BUCKET/o?uploadType=resumable&name=OBJECT' \
                 -H \"Authorization: Bearer $(gcloud auth print-access-token)\""
                    .into(),
            ],
        ));
    }
    let uri = parse_url(url, "URL")?;
    let names_a_session = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("upload_id=")));
    if names_a_session && !session {
        return Err(Failure::usage_lines(
            "usage",
            vec![
                "the URL is an upload session (it has upload_id=), not a URL to start one at"
                    .into(),
                "to resume that session, add --session".into(),
            ],
        ));
    }
    Ok(uri)
}

/// Runs one upload to its end: resumes from the saved state when there is one, saves the
/// state before every request and after every response, removes it on success.
pub fn execute(job: &Job, interrupt: Arc<AtomicBool>) -> Result<Report, Failure> {
    let url = check_url(&job.url, job.session)?;
    let mut input = open_input(&job.file)?;
    let destination = format!("{}|{}", job.session, job.url);
    let (state, saved) = StateFile::open(
        job.run.state.as_deref(),
        &input,
        "gcs",
        &destination,
        &job.url,
    )?;
    let saved = saved.and_then(|s| match s.state {
        SavedState::Gcs(state) => Some(state),
        _ => None,
    });

    let mut config = GcsConfig::new(input.total);
    // A file can be read again from any offset, so it goes in one request by default (G4);
    // a stream keeps each request's bytes until they are acknowledged, so it is chunked.
    config.chunk_size = job.chunk.unwrap_or(match input.total {
        Some(_) => GcsConfig::ONE_REQUEST,
        None => STREAM_CHUNK,
    });
    config.start_headers = job.start_headers.clone();
    config.fingerprint = input.fingerprint.clone();
    config.recheck_prefix = job.recheck;
    job.run.apply(&mut config.retry)?;
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

    let progress = Progress::new(!job.run.no_progress, input.total, &input.label);
    if resuming {
        progress.note(if job.recheck && input.total.is_some() {
            "resuming the saved upload session (checking the part already uploaded first)"
        } else {
            "resuming the saved upload session"
        });
    }
    // GCS needs no signing: signed URLs and session URIs are the credentials (G1, C2).
    let run = Run {
        state: &state,
        progress: &progress,
        interrupt,
        signer: None,
    };
    let started = Started {
        from_session: job.session,
    };
    match run::drive(
        &mut upload,
        input.source.as_mut(),
        input.total,
        run,
        &mut |_, _, _| {},
    ) {
        Ok(done) => Ok(Report {
            done,
            stats: upload.stats(),
        }),
        Err(e) => {
            let integrity = matches!(
                &e,
                resumable_blocking::DriveError::Upload(resumable_core::Error::Integrity(_))
            );
            let mut failure = run::failure(e, &upload, &job.file, &state, started);
            if let (true, Some(object)) = (integrity, object_of(&url)) {
                failure.lines.push(format!("the object is {object}"));
            }
            Err(failure)
        }
    }
}

/// `gs://BUCKET/OBJECT` of a JSON API URL (`…/b/BUCKET/o?…&name=OBJECT`) or an XML API URL
/// (`/BUCKET/OBJECT`), for naming an object that may have to be deleted.
fn object_of(url: &Uri) -> Option<String> {
    let path = url.path();
    let (bucket, object) = match path.split_once("/storage/v1/b/") {
        Some((_, rest)) => {
            let bucket = rest.strip_suffix("/o")?;
            let name = url
                .query()?
                .split('&')
                .find_map(|p| p.strip_prefix("name="))?;
            (bucket.to_owned(), name.to_owned())
        }
        None => {
            let (bucket, object) = path.strip_prefix('/')?.split_once('/')?;
            (bucket.to_owned(), object.to_owned())
        }
    };
    (!bucket.is_empty() && !object.is_empty()).then(|| format!("gs://{bucket}/{object}"))
}

fn report_success(json: bool, job: &Job, report: &Report) -> Result<(), Failure> {
    let (done, stats) = (&report.done, report.stats);
    let crc = done.crc32c.map(resumable_core::checksum::crc32c_base64);
    if json {
        let location = done.object.as_ref().and_then(|o| o.media_link.clone());
        let out = serde_json::json!({
            "ok": true,
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
                "whole_input": done.verified.whole_source,
            },
            "resumed_from": stats.resumed_from.unwrap_or(0),
            "requests": stats.requests,
            "retries": stats.retries,
        });
        print_result(&out.to_string())
    } else {
        let checked = if done.verified.crc32c && !done.verified.whole_source {
            "CRC32C verified by the server (the part uploaded before the resume was not re-read)"
        } else if done.verified.crc32c {
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
        let to = match done
            .object
            .as_ref()
            .and_then(|o| o.bucket.as_ref().zip(o.name.as_ref()))
        {
            Some((bucket, name)) => format!("gs://{bucket}/{name}"),
            None => redact_query(&job.url),
        };
        print_result(&format!(
            "uploaded {} ({} bytes, HTTP {}) to {to}: {checked}; {} requests, {} retries{resumed}",
            human(done.size),
            done.size,
            done.status.as_u16(),
            stats.requests,
            stats.retries,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // G7, issue 16: an object whose completion does not match is named so it can be deleted;
    // a session URI does not name its object, so nothing is claimed then.
    #[test]
    fn the_object_is_named_from_json_and_xml_start_urls() {
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        assert_eq!(
            object_of(&uri(
                "https://storage.googleapis.com/upload/storage/v1/b/bkt/o?uploadType=resumable&name=a%2Fb.mp4"
            ))
            .as_deref(),
            Some("gs://bkt/a%2Fb.mp4")
        );
        assert_eq!(
            object_of(&uri(
                "https://storage.googleapis.com/bkt/dir/o.bin?X-Goog-Signature=s"
            ))
            .as_deref(),
            Some("gs://bkt/dir/o.bin")
        );
        assert_eq!(
            object_of(&uri(
                "https://storage.googleapis.com/upload/storage/v1/b/bkt/o?uploadType=resumable&upload_id=x"
            )),
            None
        );
    }
}
