//! Several requests in flight: media APPENDs over forked ureq transports (one thread and
//! connection each) against the conformance server, and the one-at-a-time fallback for a
//! transport that cannot fork.

use std::io::Cursor;
use std::time::Duration;

use http::HeaderValue;
use resumable_blocking::{Driver, SeekableSource, UreqTransport, transport_fn};
use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload};
use resumable_core::{RetryPolicy, Upload as _};
use resumable_server::{Server, ServerConfig};

fn data(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i * 7919 % 253) as u8).collect()
}

fn config(server: &Server, len: usize, in_flight: u32) -> MediaConfig {
    let api = ApiVersion::V2 {
        base: server.media_v2_base().parse().unwrap(),
    };
    let mut config = MediaConfig::new(api, len as u64, "video/mp4");
    config.segment_size = 64 * 1024;
    config.max_in_flight = in_flight;
    let mut retry = RetryPolicy::default();
    retry.initial_backoff = Duration::from_millis(10);
    retry.jitter = Duration::ZERO;
    config.retry = retry;
    config
}

// M2: four APPENDs go out at once (the server stalls each 150 ms, so they overlap), one is
// answered 503 and retried by its segment_index, and the media is byte-identical.
#[test]
fn appends_go_out_together_on_forked_transports() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let src = data(8 * 64 * 1024 + 5);
    let mut config = config(&server, src.len(), 4);
    config.headers.insert(
        "x-resumable-session-faults",
        HeaderValue::from_static("media.append=stall:150ms; media.append#3=status:503"),
    );
    let mut upload = MediaUpload::new(config).unwrap();
    let mut progress = 0u64;
    let done = Driver::new()
        .on_event(|_, event| {
            if let resumable_blocking::Event::Progress(p) = event {
                progress = progress.max(p.total_sent);
            }
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(src.clone())),
            &mut UreqTransport::new(),
        )
        .unwrap();
    assert_eq!(server.media(&done.media_id).unwrap(), src);
    assert_eq!(server.peak_concurrent_requests(), 4);
    assert_eq!(server.media_info(&done.media_id).unwrap().segments, 9);
    assert_eq!(upload.stats().retries, 1);
    assert!(
        progress > src.len() as u64,
        "every body's bytes were reported"
    );
}

// A transport that cannot fork (a closure) still drives an upload that allows several in
// flight: one request at a time, every segment once.
#[test]
fn a_transport_that_cannot_fork_sends_one_at_a_time() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let src = data(5 * 64 * 1024);
    let mut upload = MediaUpload::new(config(&server, src.len(), 4)).unwrap();
    let mut ureq = UreqTransport::new();
    let mut sent = 0;
    let mut transport = transport_fn(|request, body| {
        sent += 1;
        resumable_blocking::Transport::send(&mut ureq, request, body)
    });
    let done = Driver::new()
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(src.clone())),
            &mut transport,
        )
        .unwrap();
    assert_eq!(server.media(&done.media_id).unwrap(), src);
    assert_eq!(server.peak_concurrent_requests(), 1);
    assert_eq!(sent, 7, "INIT, five APPENDs, FINALIZE");
}
