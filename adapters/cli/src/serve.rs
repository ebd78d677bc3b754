//! `resumable serve`: the conformance server in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use resumable_server::{FaultScript, Server, ServerConfig};

use crate::Failure;
use crate::size::parse_size;

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
    /// Prepare this much upload memory at start, e.g. 1GiB (for benchmarks: the first
    /// write to fresh memory is slow on a virtual machine; this moves that cost out of the
    /// uploads).
    #[arg(long, value_name = "SIZE")]
    warm_memory: Option<String>,
}

/// Runs the server until Ctrl-C.
pub fn run(args: ServeArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let faults = match &args.faults {
        Some(spec) => {
            FaultScript::parse(spec).map_err(|e| Failure::usage(format!("--faults: {e}")))?
        }
        None => FaultScript::default(),
    };
    let warm_memory = match &args.warm_memory {
        Some(text) => {
            let n = parse_size(text).map_err(|e| Failure::usage(format!("--warm-memory: {e}")))?;
            if n > ServerConfig::default().max_object_size {
                return Err(Failure::usage(
                    "--warm-memory: at most 16GiB (the largest object the server keeps)",
                ));
            }
            n
        }
        None => 0,
    };
    let config = ServerConfig {
        listen: args.listen,
        faults,
        md5: !args.no_md5,
        warm_memory,
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
