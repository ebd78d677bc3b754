//! `resumable ietf`: an upload of the IETF resumable-upload draft (R1–R19) at a chosen interop
//! version: create at a target URL, or resume an existing upload resource; cancel with DELETE.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;
use resumable_core::ietf::{
    IetfCompletion, IetfConfig, IetfStart, IetfUpload, LATEST_INTEROP_VERSION,
    OLDEST_INTEROP_VERSION,
};
use resumable_core::{Error, SavedState, SessionUri, Stats, Upload as _};

use crate::Failure;
use crate::output::{Progress, print_result};
use crate::run::{
    self, Run, RunArgs, Started, StateFile, open_input, parse_headers, parse_url, redact_query,
    usage,
};
use crate::size::{human, parse_size};

/// Arguments of `resumable ietf`.
#[derive(Args, Debug)]
#[command(
    after_help = "The upload is created with an empty request first, so its address is known \
before any data is sent and an interrupted upload can always be resumed. The protocol is still \
an Internet-Draft: client and server must speak the same interop version (5, 6, 7, 8 or 9; 9 \
by default). Exit codes: 0 success (or, with --cancel, the upload removed), 1 upload failed, \
2 bad usage or input, 130 interrupted (state saved: run the same command again to resume)."
)]
pub struct IetfArgs {
    /// The file to upload (its size must be known: stdin is not supported).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The URL that creates uploads (e.g. `https://uploads.example/files`), or with
    /// --upload-url an existing upload to resume.
    #[arg(value_name = "URL")]
    pub(crate) url: String,
    /// URL is an existing upload (from another run or another client): ask the server how
    /// much it holds and send the rest.
    #[arg(long)]
    pub(crate) upload_url: bool,
    /// The draft's interop version to speak: 5 (draft -03), 6 (-04, -05), 7 (-06 to -08),
    /// 8 (-09 to -11) or 9 (-12 and later).
    #[arg(long, value_name = "N", default_value_t = LATEST_INTEROP_VERSION,
          value_parser = clap::value_parser!(u32).range(i64::from(OLDEST_INTEROP_VERSION)..=i64::from(LATEST_INTEROP_VERSION)))]
    pub(crate) interop_version: u32,
    /// Most bytes per request, e.g. 8MiB, 512KiB, 1048576 (the server's limit lowers it).
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    pub(crate) append_size: String,
    /// Ask the server's limits first (an OPTIONS request).
    #[arg(long)]
    pub(crate) discover: bool,
    /// The file's content type, sent with the request that creates the upload.
    #[arg(long, value_name = "TYPE")]
    pub(crate) content_type: Option<String>,
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
    Uploaded(IetfCompletion, Stats),
    Cancelled,
}

/// Runs `resumable ietf`.
pub fn run(args: IetfArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    match execute(&args, interrupt)? {
        Ended::Cancelled if args.json => print_result(
            &serde_json::json!({"ok": true, "protocol": "ietf", "cancelled": true}).to_string(),
        ),
        Ended::Cancelled => print_result("the upload was removed from the server"),
        Ended::Uploaded(done, stats) => {
            let url = done
                .upload_url
                .as_ref()
                .map(|u| redact_query(&u.expose().to_string()));
            if args.json {
                let out = serde_json::json!({
                    "ok": true,
                    "protocol": "ietf",
                    "interop_version": args.interop_version,
                    "bytes": done.size,
                    "status": done.status.as_u16(),
                    "upload_url": url,
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
                let place = url.map(|u| format!(" to {u}")).unwrap_or_default();
                print_result(&format!(
                    "uploaded {} ({} bytes, HTTP {}){place}: the server says it holds every \
                     byte and the upload is complete; {} requests, {} retries{resumed}",
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

fn execute(args: &IetfArgs, interrupt: Arc<AtomicBool>) -> Result<Ended, Failure> {
    let url = parse_url(&args.url, "URL")?;
    let append = parse_size(&args.append_size).map_err(|e| usage(format!("--append-size: {e}")))?;
    if append == 0 {
        return Err(usage("--append-size must be more than 0"));
    }
    let mut input = open_input(&args.file)?;
    let Some(total) = input.total else {
        return Err(usage(
            "resumable ietf needs a file of known size (stdin is not supported)",
        ));
    };
    let destination = format!("{}|{}|{}", args.upload_url, args.interop_version, args.url);
    let (state, saved) = StateFile::open(
        args.run.state.as_deref(),
        &input,
        "ietf",
        &destination,
        &args.url,
    )?;
    let saved = saved.and_then(|s| match s.state {
        SavedState::Ietf(state) => Some(state),
        _ => None,
    });

    let mut config = IetfConfig::new(total);
    config.interop_version = args.interop_version;
    config.append_size = append;
    config.discover = args.discover;
    config.headers = parse_headers(&args.headers)?;
    if let Some(ct) = &args.content_type {
        let value = ct
            .parse()
            .map_err(|_| usage("--content-type is not a valid header value"))?;
        config
            .creation_headers
            .insert(http::header::CONTENT_TYPE, value);
    }
    config.fingerprint = input.fingerprint.clone();
    args.run.apply(&mut config.retry)?;

    let progress = Progress::new(!args.run.no_progress, input.total, &input.label);
    let resuming = saved.is_some() || args.upload_url;
    let start = match saved {
        Some(state) => IetfStart::Resume(state),
        None if args.upload_url => {
            IetfStart::Existing(SessionUri::new(url.clone()).map_err(|e| usage(e.to_string()))?)
        }
        None if args.cancel => {
            return Err(usage(
                "there is no saved upload to cancel; give its URL with --upload-url",
            ));
        }
        None => IetfStart::Create {
            endpoint: url.clone(),
        },
    };
    let mut upload = IetfUpload::new(start, config).map_err(|e| usage(e.to_string()))?;
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
