//! The async driver drives TON and media uploads too (it is generic over the core's `Upload`):
//! tokio + reqwest against the conformance server's TON and media sides, with faults.

use resumable_core::Upload as _;
use std::time::Duration;

use futures::io::Cursor;
use http::HeaderValue;
use resumable_async::{Driver, ReqwestTransport, SeekableSource, TokioTimer};
use resumable_core::RetryPolicy;
use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload, ProcessingState};
use resumable_core::ton::{TonConfig, TonStart, TonUpload};
use resumable_server::{Server, ServerConfig};

fn data(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i * 7919 % 253) as u8).collect()
}

/// Quick retries: the faults below are retried within milliseconds.
fn quick() -> RetryPolicy {
    let mut p = RetryPolicy::default();
    p.initial_backoff = Duration::from_millis(10);
    p.jitter = Duration::ZERO;
    p
}

// T2-T6: a TON upload through a dropped connection and a 503, byte-identical at the end.
#[tokio::test]
async fn ton_upload_through_faults() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let src = data(1024 * 1024 + 77);
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), src.len() as u64);
    config.chunk_size = 256 * 1024;
    config.chunk_time = None;
    config.retry = quick();
    config.start_headers.insert(
        "x-resumable-session-faults",
        HeaderValue::from_static("ton.chunk#2=drop-after:100000; ton.chunk#3=status:503"),
    );
    let start = TonStart::Resumable {
        bucket_url: server.ton_bucket_url("b").parse().unwrap(),
    };
    let mut upload = TonUpload::new(start, config).unwrap();
    let done = Driver::new(TokioTimer)
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(src.clone())),
            &ReqwestTransport::new().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(done.size, src.len() as u64);
    assert_eq!(upload.stats().retries, 2);
    let stored = server.ton_object("b", &done.location.to_string()).unwrap();
    assert_eq!(stored, src);
}

// M1-M4, M6: media in both API forms, an APPEND answered 503 (retried with the same
// segment_index), and processing followed over STATUS polls.
#[tokio::test]
async fn media_upload_in_both_forms_with_processing() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let src = data(700 * 1024 + 3);
    for api in [
        ApiVersion::V1_1 {
            endpoint: server.media_v1_url().parse().unwrap(),
        },
        ApiVersion::V2 {
            base: server.media_v2_base().parse().unwrap(),
        },
    ] {
        let form = api.form();
        let mut config = MediaConfig::new(api, src.len() as u64, "video/mp4");
        config.segment_size = 256 * 1024;
        config.media_category = Some("tweet_video".into());
        config.retry = quick();
        config.headers.insert(
            "x-resumable-session-faults",
            HeaderValue::from_static("media.append#2=status:503"),
        );
        let mut upload = MediaUpload::new(config).unwrap();
        let done = Driver::new(TokioTimer)
            .drive(
                &mut upload,
                &mut SeekableSource::new(Cursor::new(src.clone())),
                &ReqwestTransport::new().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(server.media(&done.media_id).unwrap(), src, "{form:?}");
        let processing = done.processing.as_ref().map(|p| p.state);
        assert_eq!(processing, Some(ProcessingState::Succeeded), "{form:?}");
        let info = server.media_info(&done.media_id).unwrap();
        assert_eq!(info.appends.get(&1), Some(&1), "{form:?}: {info:?}");
        assert_eq!(upload.stats().retries, 1, "{form:?}");
    }
}

// M2: with four APPENDs allowed in flight, the driver sends four at once on one client (each
// stalled 150 ms by the server so they overlap), one of them answered 503 and retried by its
// segment_index; the server assembles the media by index, byte-identical.
#[tokio::test]
async fn media_appends_go_out_together_on_one_client() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let src = data(8 * 64 * 1024 + 5);
    let mut config = MediaConfig::new(
        ApiVersion::V2 {
            base: server.media_v2_base().parse().unwrap(),
        },
        src.len() as u64,
        "video/mp4",
    );
    config.segment_size = 64 * 1024;
    config.max_in_flight = 4;
    config.retry = quick();
    config.headers.insert(
        "x-resumable-session-faults",
        HeaderValue::from_static("media.append=stall:150ms; media.append#3=status:503"),
    );
    let mut upload = MediaUpload::new(config).unwrap();
    let done = Driver::new(TokioTimer)
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(src.clone())),
            &ReqwestTransport::new().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(server.media(&done.media_id).unwrap(), src);
    assert_eq!(server.peak_concurrent_requests(), 4);
    let info = server.media_info(&done.media_id).unwrap();
    assert_eq!(info.segments, 9, "{info:?}");
    assert_eq!(upload.stats().retries, 1);
}
