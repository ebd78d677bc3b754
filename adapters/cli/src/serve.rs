//! `resumable serve`: the conformance server in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use resumable_server::{FaultScript, Server, ServerConfig};

use crate::Failure;

/// Arguments of `resumable serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A fault script, e.g. 'gcs.chunk#2=drop-after:1MiB; gcs.chunk#4=status:503x2'
    /// (the grammar is in the resumable-server crate's `fault` module docs).
    #[arg(long, value_name = "SPEC")]
    faults: Option<String>,
    /// Do not compute MD5 of uploads (faster; objects then report no md5Hash).
    #[arg(long)]
    no_md5: bool,
}

/// Runs the server until Ctrl-C.
pub fn run(args: ServeArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let faults = match &args.faults {
        Some(spec) => {
            FaultScript::parse(spec).map_err(|e| Failure::usage(format!("--faults: {e}")))?
        }
        None => FaultScript::default(),
    };
    let config = ServerConfig {
        listen: args.listen,
        faults,
        md5: !args.no_md5,
        ..ServerConfig::default()
    };
    let server = Server::start(config)
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    println!("{}", server.banner());
    eprintln!("serving until Ctrl-C");
    while !interrupt.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.shutdown();
    eprintln!("stopped");
    Ok(())
}
