//! `resumable tus`: a tus 1.0 upload (U1–U15): create at a creation URL, or resume an
//! existing upload URL; metadata, checksums, deferred length for stdin, termination.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use resumable_core::tus::{ChecksumAlgorithm, TusCompletion, TusConfig, TusStart, TusUpload};
use resumable_core::{Error, SavedState, SessionUri, Stats, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{
    self, Run, RunArgs, Started, StateFile, open_input, parse_headers, parse_url, redact_query,
    usage,
};
use crate::size::{human, parse_size};

/// A checksum the server verifies for every request's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Checksum {
    /// SHA-1 (every tus server that checks checksums supports it).
    Sha1,
}

/// Arguments of `resumable tus`.
#[derive(Args, Debug)]
#[command(
    after_help = "The upload URL is printed on success: it is where the server keeps the file, \
and whoever holds it can change or delete the upload. Exit codes: 0 success (or, with \
--cancel, the upload removed), 1 upload failed, 2 bad usage or input, 130 interrupted (state \
saved: run the same command again to resume)."
)]
pub struct TusArgs {
    /// The file to upload, or - for stdin (its size is then sent when the input ends).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The server's creation URL (e.g. `https://tus.example/files/`), or with --upload-url an
    /// existing upload to resume.
    #[arg(value_name = "URL")]
    pub(crate) url: String,
    /// URL is an existing upload (from another run or another client): ask the server how
    /// much it holds and send the rest.
    #[arg(long)]
    pub(crate) upload_url: bool,
    /// Metadata for the new upload, key=value (repeatable; e.g. filename=report.pdf).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<String>,
    /// Have the server verify each request's bytes with this checksum (the server must
    /// offer it; a mismatch sends those bytes again).
    #[arg(long, value_name = "ALGORITHM")]
    pub(crate) checksum: Option<Checksum>,
    /// Bytes per request, e.g. 8MiB, 512KiB, 1048576.
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    pub(crate) chunk_size: String,
    /// Ask the server what it supports first, and use only that.
    #[arg(long)]
    pub(crate) discover: bool,
    /// Send the first chunk with the request that creates the upload (when the server
    /// offers it).
    #[arg(long)]
    pub(crate) creation_with_upload: bool,
    /// Send PATCH and DELETE as POST with X-HTTP-Method-Override (for proxies that pass no
    /// other methods).
    #[arg(long)]
    pub(crate) method_override: bool,
    /// Remove the upload from the server (the saved one, or the --upload-url one) instead of
    /// uploading.
    #[arg(long)]
    pub(crate) cancel: bool,
    /// An extra header for every request, 'Name: value' (repeatable; e.g. Authorization).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub(crate) headers: Vec<String>,
    /// Print the outcome as one JSON object on stdout (also on failure).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// How a run ended well.
enum Ended {
    Uploaded(TusCompletion, Stats),
    Cancelled,
}

/// Runs `resumable tus`.
pub fn run(args: TusArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    match execute(&args, interrupt)? {
        Ended::Cancelled if args.json => print_result(
            &serde_json::json!({"ok": true, "protocol": "tus", "cancelled": true}).to_string(),
        ),
        Ended::Cancelled => print_result("the upload was removed from the server"),
        Ended::Uploaded(done, stats) => {
            let url = redact_query(&done.upload_url.expose().to_string());
            if args.json {
                let out = serde_json::json!({
                    "ok": true,
                    "protocol": "tus",
                    "bytes": done.size,
                    "status": done.status.as_u16(),
                    "upload_url": url,
                    "expires": done.expires,
                    "checksum": args.checksum.map(|_| "sha1"),
                    "resumed_from": stats.resumed_from.unwrap_or(0),
                    "requests": stats.requests,
                    "retries": stats.retries,
                });
                print_result(&out.to_string())
            } else {
                let resumed = match stats.resumed_from {
                    Some(k) => format!(", resumed from {}", human(k)),
                    None => String::new(),
                };
                let checked = match args.checksum {
                    Some(_) => "SHA-1 of every request checked by the server",
                    None => "no checksum",
                };
                print_result(&format!(
                    "uploaded {} ({} bytes, HTTP {}) to {url}: {checked}; {} requests, {} \
                     retries{resumed}",
                    human(done.size),
                    done.size,
                    done.status.as_u16(),
                    stats.requests,
                    stats.retries,
                ))
            }
        }
    }
}

/// `--metadata key=value` pairs, in order.
fn metadata(pairs: &[String]) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| usage(format!("--metadata {p:?}: write it as key=value")))?;
            Ok((k.to_owned(), v.as_bytes().to_vec()))
        })
        .collect()
}

fn execute(args: &TusArgs, interrupt: Arc<AtomicBool>) -> Result<Ended, Failure> {
    let url = parse_url(&args.url, "URL")?;
    let chunk = parse_size(&args.chunk_size).map_err(|e| usage(format!("--chunk-size: {e}")))?;
    if chunk == 0 {
        return Err(usage("--chunk-size must be more than 0"));
    }
    let mut input = open_input(&args.file)?;
    let destination = format!("{}|{}", args.upload_url, args.url);
    let (state, saved) = StateFile::open(
        args.run.state.as_deref(),
        &input,
        "tus",
        &destination,
        &args.url,
    )?;
    let mut saved = saved.and_then(|s| match s.state {
        SavedState::Tus(state) => Some(state),
        _ => None,
    });

    let mut config = TusConfig::new(input.total);
    config.chunk_size = chunk;
    config.metadata = metadata(&args.metadata)?;
    config.checksum = args.checksum.map(|Checksum::Sha1| ChecksumAlgorithm::Sha1);
    // A checksum is only sent with an algorithm the server offers (U11): ask first.
    config.discover = args.discover || args.checksum.is_some();
    config.creation_with_upload = args.creation_with_upload;
    config.method_override = args.method_override;
    config.headers = parse_headers(&args.headers)?;
    config.fingerprint = input.fingerprint.clone();
    args.run.apply(&mut config.retry)?;

    let progress = Progress::new(!args.run.no_progress, input.total, &input.label);
    let now = SystemTime::now();
    if saved.as_ref().is_some_and(|s| s.expired_at(now)) {
        // U10: the server may have dropped it; never resume past its expiry.
        if args.upload_url {
            state.remove();
            return Err(Failure::upload(
                "expired",
                vec![
                    "the saved upload has expired on the server".into(),
                    "start a new upload at the server's creation URL".into(),
                ],
            ));
        }
        progress.note("the saved upload has expired on the server; starting a new one");
        state.remove();
        saved = None;
    }
    let resuming = saved.is_some() || args.upload_url;
    let start = match saved {
        Some(state) => TusStart::Resume { state, now },
        None if args.upload_url => {
            TusStart::Existing(SessionUri::new(url.clone()).map_err(|e| usage(e.to_string()))?)
        }
        None if args.cancel => {
            return Err(usage(
                "there is no saved upload to cancel; give its URL with --upload-url",
            ));
        }
        None => TusStart::Create {
            endpoint: url.clone(),
        },
    };
    let mut upload = TusUpload::new(start, config).map_err(|e| usage(e.to_string()))?;
    if args.cancel {
        upload.cancel();
    } else if resuming {
        progress.note("resuming the upload (asking the server how much it holds)");
    }
    let run = Run {
        state: &state,
        progress: &progress,
        interrupt,
        signer: None,
    };
    let started = Started {
        from_session: args.upload_url,
    };
    match run::drive(
        &mut upload,
        input.source.as_mut(),
        input.total,
        run,
        &mut |_, _, _| {},
    ) {
        Ok(done) => Ok(Ended::Uploaded(done, upload.stats())),
        Err(resumable_blocking::DriveError::Upload(Error::Cancelled)) if args.cancel => {
            state.remove();
            Ok(Ended::Cancelled)
        }
        Err(e) => Err(run::failure(e, &upload, &args.file, &state, started)),
    }
}
