//! `resumable`: resumable and chunked uploads from the command line.
//!
//! Exit codes (a contract scripts rely on): 0 success; 1 the upload failed (the cause in
//! words, and how to resume when the session can be resumed); 2 bad usage or input (one line);
//! 130, 143, 129 interrupted by Ctrl-C, SIGTERM or SIGHUP, with the resume state saved.

// The doc comments of the argument structs are the tool's help text, shown to users as they
// are written: plain addresses and words like <redacted>, not Markdown.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

mod compliance;
mod demo;
mod gcs;
mod ietf;
mod logging;
mod media;
mod output;
mod results;
mod run;
mod s3;
mod serve;
mod sessions;
mod size;
mod state;
mod ton;
mod tus;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clap::{Parser, Subcommand};

/// Resumable and chunked uploads: Google Cloud Storage resumable sessions (what Twitter's
/// batch compliance upload_url is), Twitter TON, Twitter/X media/upload, tus 1.0 and the IETF
/// resumable-upload draft, with resume after interruption.
#[derive(Parser, Debug)]
#[command(name = "resumable", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show every retry, wait and failed request on stderr, one line each.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Show every request and answer on stderr (method, address, headers, status, time), with
    /// credentials, signatures and session addresses replaced by <redacted>.
    #[arg(long, global = true)]
    log_http: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload a file through a Google Cloud Storage resumable session.
    Gcs(gcs::GcsArgs),
    /// Upload a file to a Twitter TON bucket (resumable, or one request under 64 MiB).
    Ton(ton::TonArgs),
    /// Upload media with Twitter/X media/upload (INIT, APPEND, FINALIZE, STATUS).
    Media(media::MediaArgs),
    /// Upload a file to S3 or an S3-compatible store in parts, several at once, resumable.
    S3(s3::S3Args),
    /// Upload a file to a tus 1.0 server (create an upload, or resume one), with resume
    /// after interruption.
    Tus(tus::TusArgs),
    /// Upload a file with the IETF "Resumable Uploads for HTTP" draft (create an upload, or
    /// resume one), at a chosen interop version, with resume after interruption.
    Ietf(ietf::IetfArgs),
    /// Run a Twitter/X batch compliance job: create it, upload the ids, poll until it is
    /// complete, download and summarise the results.
    Compliance(compliance::ComplianceArgs),
    /// List the uploads whose resume state is kept, or remove them (--forget, --prune).
    Sessions(sessions::SessionsArgs),
    /// Run the local conformance server (with optional faults) in the foreground.
    Serve(serve::ServeArgs),
    /// Upload a generated file to the embedded server, with faults, and check it.
    Demo(demo::DemoArgs),
}

impl Command {
    /// The protocol name `--json` reports, and whether `--json` was asked for.
    fn json(&self) -> Option<&'static str> {
        match self {
            Command::Gcs(a) => a.json.then_some("gcs"),
            Command::Ton(a) => a.json.then_some("ton"),
            Command::Media(a) => a.json.then_some("media"),
            Command::S3(a) => a.json.then_some("s3"),
            Command::Tus(a) => a.json.then_some("tus"),
            Command::Ietf(a) => a.json.then_some("ietf"),
            Command::Compliance(a) => a.json.then_some("compliance"),
            Command::Serve(_) | Command::Demo(_) | Command::Sessions(_) => None,
        }
    }
}

/// How a command that did not succeed ended: the exit code, the words for the user, and what
/// `--json` reports (see the README for the fields).
#[derive(Debug)]
pub struct Failure {
    /// 1: the upload failed; 2: bad usage or input; 128 + n: stopped by signal n.
    code: u8,
    /// A stable name of what went wrong, for scripts.
    kind: &'static str,
    /// The message, then hints (how to resume, what to check).
    lines: Vec<String>,
    /// Running the same command again continues this upload.
    resumable: bool,
    /// Bytes the server acknowledged holding, when an upload had begun.
    persisted: Option<u64>,
    /// Where the resume state is kept, when it is kept.
    state: Option<PathBuf>,
    /// The failure object may go to stdout (not when stdout itself failed).
    json: bool,
}

impl Failure {
    /// Bad usage or input: exit 2 with this one-line message.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::usage_lines("usage", vec![message.into()])
    }

    /// Bad input of kind `kind` (exit 2), with hints after the message.
    pub fn usage_lines(kind: &'static str, lines: Vec<String>) -> Self {
        Failure {
            code: 2,
            ..Failure::upload(kind, lines)
        }
    }

    /// The upload failed (exit 1): what went wrong, then hints.
    pub fn upload(kind: &'static str, lines: Vec<String>) -> Self {
        Failure {
            code: 1,
            kind,
            lines,
            resumable: false,
            persisted: None,
            state: None,
            json: true,
        }
    }

    /// Stopped by a signal (exit 128 + its number): this line says how to go on.
    pub fn interrupted(line: String) -> Self {
        let signal = signals::received().unwrap_or(signals::SIGINT);
        Failure {
            code: 128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
            ..Failure::upload("interrupted", vec![line])
        }
    }

    /// What a resume would go on from: whether it can, what the server holds, the state file.
    pub fn with_resume(
        mut self,
        resumable: bool,
        persisted: Option<u64>,
        state: Option<PathBuf>,
    ) -> Self {
        self.resumable = resumable;
        self.persisted = persisted;
        self.state = state;
        self
    }

    /// Whether a signal (or the demo's simulated crash) stopped the command.
    pub fn is_interrupted(&self) -> bool {
        self.kind == "interrupted"
    }

    /// Reported on stderr only (stdout cannot take it).
    pub fn no_json(mut self) -> Self {
        self.json = false;
        self
    }

    fn print(&self, protocol: Option<&'static str>) {
        let label = match (self.code, signals::received()) {
            (2, _) | (1, _) => "error",
            (_, Some(signals::SIGTERM)) => "terminated",
            (_, Some(signals::SIGHUP)) => "hung up",
            _ => "interrupted",
        };
        for (i, line) in self.lines.iter().enumerate() {
            if i == 0 {
                eprintln!("{label}: {line}");
            } else {
                eprintln!("  {line}");
            }
        }
        if let (Some(protocol), true) = (protocol, self.json) {
            let out = serde_json::json!({
                "ok": false,
                "protocol": protocol,
                "exit_code": self.code,
                "error": {
                    "kind": self.kind,
                    "message": self.lines.first(),
                    "hints": &self.lines[self.lines.len().min(1)..],
                },
                "resumable": self.resumable,
                "bytes_persisted": self.persisted,
                "state_file": self.state.as_ref().map(|p| p.display().to_string()),
            });
            // Nothing more can be said if stdout fails too; stderr has the message.
            let _ = output::print_result(&out.to_string());
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP: the first raises the interrupt flag (the running command saves
/// its state and returns); a second exits at once.
mod signals {
    use super::*;

    pub use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

    /// The number of the first signal received (0: none yet).
    static RECEIVED: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();

    /// Installs the handlers; the returned flag is raised by the first signal.
    pub fn install() -> Arc<AtomicBool> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let received = RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            // Registered first, so it runs before the flag is raised: only a second signal
            // finds it raised.
            let _ = signal_hook::flag::register_conditional_shutdown(
                signal,
                128 + signal,
                interrupt.clone(),
            );
            let _ = signal_hook::flag::register_usize(signal, received.clone(), signal as usize);
            let _ = signal_hook::flag::register(signal, interrupt.clone());
        }
        interrupt
    }

    /// The signal received, if any (the latest, when several came).
    pub fn received() -> Option<i32> {
        let n = RECEIVED.get().map_or(0, |r| r.load(Ordering::SeqCst));
        i32::try_from(n).ok().filter(|n| *n != 0)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.log_http);
    let interrupt = signals::install();
    let json = cli.command.json();
    let result = match cli.command {
        Command::Gcs(args) => gcs::run(args, interrupt),
        Command::Ton(args) => ton::run(args, interrupt),
        Command::Media(args) => media::run(args, interrupt),
        Command::S3(args) => s3::run(args, interrupt),
        Command::Tus(args) => tus::run(args, interrupt),
        Command::Ietf(args) => ietf::run(args, interrupt),
        Command::Compliance(args) => compliance::run(args, interrupt),
        Command::Sessions(args) => sessions::run(args),
        Command::Serve(args) => serve::run(args, interrupt),
        Command::Demo(args) => demo::run(args, interrupt),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print(json);
            ExitCode::from(failure.code)
        }
    }
}
