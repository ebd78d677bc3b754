//! `resumable`: resumable and chunked uploads from the command line.
//!
//! Exit codes (a contract scripts rely on): 0 success; 1 the upload failed (the cause in
//! words, and how to resume when the session can be resumed); 2 bad usage or input (one line);
//! 130 interrupted by Ctrl-C, with the resume state saved.

mod compliance;
mod demo;
mod gcs;
mod media;
mod output;
mod run;
mod serve;
mod size;
mod state;
mod ton;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

/// Resumable and chunked uploads: Google Cloud Storage resumable sessions (what Twitter's
/// batch compliance upload_url is), Twitter TON and Twitter/X media/upload, with resume after
/// interruption.
#[derive(Parser, Debug)]
#[command(name = "resumable", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload a file through a Google Cloud Storage resumable session.
    Gcs(gcs::GcsArgs),
    /// Upload a file to a Twitter TON bucket (resumable, or one request under 64 MiB).
    Ton(ton::TonArgs),
    /// Upload media with Twitter/X media/upload (INIT, APPEND, FINALIZE, STATUS).
    Media(media::MediaArgs),
    /// Run a Twitter/X batch compliance job: create it, upload the ids, poll until it is
    /// complete, download and summarise the results.
    Compliance(compliance::ComplianceArgs),
    /// Run the local conformance server (with optional faults) in the foreground.
    Serve(serve::ServeArgs),
    /// Upload a generated file to the embedded server, with faults, and check it.
    Demo(demo::DemoArgs),
}

/// How a command ended; mapped to the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or input: exit 2 with this one-line message.
    Usage(String),
    /// The upload failed: exit 1 with these lines.
    Upload(Vec<String>),
    /// Ctrl-C: exit 130 with this line.
    Interrupted(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C raises the flag; the running command saves its state and returns. A second
    // Ctrl-C exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let result = match cli.command {
        Command::Gcs(args) => gcs::run(args, interrupt),
        Command::Ton(args) => ton::run(args, interrupt),
        Command::Media(args) => media::run(args, interrupt),
        Command::Compliance(args) => compliance::run(args, interrupt),
        Command::Serve(args) => serve::run(args, interrupt),
        Command::Demo(args) => demo::run(args, interrupt),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Upload(lines)) => {
            for (i, line) in lines.iter().enumerate() {
                if i == 0 {
                    eprintln!("error: {line}");
                } else {
                    eprintln!("  {line}");
                }
            }
            ExitCode::from(1)
        }
        Err(Failure::Interrupted(message)) => {
            eprintln!("interrupted: {message}");
            ExitCode::from(130)
        }
    }
}
