//! The scenario suite and the cancellation contract on tokio, over `ReqwestTransport` and
//! `TokioTimer`, against the conformance server.

#![cfg(all(feature = "reqwest", feature = "tokio"))]

mod common;

use resumable_core::Upload as _;
use std::time::Duration;

use common::*;
use resumable_async::{
    Driver, Event, ReqwestOptions, ReqwestTransport, SeekableSource, StreamSource, TokioTimer,
};
use resumable_core::gcs::{GcsUpload, ResumeState, Start};
use resumable_server::{Server, ServerConfig};

fn transport() -> ReqwestTransport {
    let mut options = ReqwestOptions::default();
    options.proxy_from_env = false;
    options.io_timeout = Some(Duration::from_secs(10));
    ReqwestTransport::with_options(options).unwrap()
}

async fn run(name: &str) {
    let scenario = scenario(name);
    let run = run_scenario(&scenario, &mut transport(), TokioTimer).await;
    (scenario.check)(&run);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                run(stringify!($name)).await
            }
        )*

        #[test]
        fn the_suite_is_complete() {
            let mut listed = vec![$(stringify!($name)),*];
            listed.sort();
            let mut all = names();
            all.sort();
            assert_eq!(listed, all);
        }
    };
}

suite!(
    full_upload,
    partial_persistence,
    drop_mid_chunk,
    no_range_308,
    retryable_503_waits,
    unknown_size_stream,
    stream_ending_on_a_boundary,
    final_checksums,
    session_gone,
    lost_final_response,
    truncated_response,
    range_beyond_sent,
    source_shorter_than_declared,
    empty_stream,
);

// Cancellation: the upload future is dropped while a chunk's body streams; a new upload from
// the state saved at `Sending` resumes with a status query and completes exactly (G3, G6).
#[tokio::test]
async fn dropping_the_future_mid_chunk_then_resuming_from_the_saved_state() {
    drop_mid_chunk_then_resume(Resume::FromSavedState, &mut transport(), TokioTimer).await;
}

// Cancellation: the same upload, driven again by the same driver, reports the abandoned
// request as failed and goes on after a status query (G8).
#[tokio::test]
async fn dropping_the_future_mid_chunk_then_driving_again() {
    drop_mid_chunk_then_resume(Resume::SameDriver, &mut transport(), TokioTimer).await;
}

// Interrupt, then cancel (G10): the future is dropped after the first chunk's 308 (no DELETE:
// an interrupt is not a cancel, and the state is resumable); then `cancel()` and one more
// drive send `DELETE` and end with `Cancelled`.
#[tokio::test]
async fn an_interrupt_keeps_the_session_and_cancel_deletes_it() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let source = data(600 * KIB);
    let mut upload = GcsUpload::new(
        xml_start(start_url(&server, "")),
        config(Some(source.len() as u64)),
    )
    .unwrap();
    let (signal, interrupted) = futures::channel::oneshot::channel::<()>();
    let mut signal = Some(signal);
    let mut driver = Driver::new(TokioTimer).on_event(move |_: &GcsUpload, event: &Event<'_>| {
        if let Event::Response { status, .. } = event
            && status.as_u16() == 308
            && let Some(signal) = signal.take()
        {
            let _ = signal.send(());
        }
        Ok(())
    });
    let mut file = SeekableSource::new(futures::io::Cursor::new(source.clone()));
    let transport = transport();
    tokio::select! {
        result = driver.drive(&mut upload, &mut file, &transport) => {
            panic!("the upload ended before the interrupt: {result:?}")
        }
        _ = interrupted => {}
    }
    assert!(server.request_log().iter().all(|e| e.method != "DELETE"));
    let state = upload.resume_state().expect("resumable");
    assert_eq!(state.persisted, CHUNK);

    upload.cancel();
    let result = driver.drive(&mut upload, &mut file, &transport).await;
    assert!(
        matches!(
            result,
            Err(resumable_async::DriveError::Upload(
                resumable_core::Error::Cancelled
            ))
        ),
        "{result:?}"
    );
    // The interrupted chunk's PUT is logged whenever its connection closes, possibly after
    // the DELETE: look for the DELETE itself.
    let log = server.request_log();
    let delete = log
        .iter()
        .rfind(|e| e.method == "DELETE")
        .expect("cancel sends DELETE (G10)");
    assert_eq!(delete.status, Some(499));
    assert!(server.object(BUCKET, OBJECT).is_none());
}

// G3, G5: resuming a stream (stdin piped again) from a state saved after 1 MiB was
// acknowledged: the first request is a status query, acknowledged bytes are read once for the
// check and not kept or re-sent, and the window stays small.
#[tokio::test]
async fn resuming_a_stream_skips_acknowledged_bytes() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let source = data(2048 * KIB);
    let transport = transport();
    let mut first = GcsUpload::new(xml_start(start_url(&server, "")), config(None)).unwrap();
    let (signal, stop) = futures::channel::oneshot::channel::<ResumeState>();
    let mut signal = Some(signal);
    let mut driver =
        Driver::new(TokioTimer).on_event(move |upload: &GcsUpload, event: &Event<'_>| {
            if let Event::Response { .. } = event
                && upload.persisted() >= 1024 * KIB
                && let Some(signal) = signal.take()
            {
                let _ = signal.send(upload.resume_state().unwrap());
            }
            Ok(())
        });
    let mut stream = StreamSource::new(items(&source, 8192));
    let state = tokio::select! {
        result = driver.drive(&mut first, &mut stream, &transport) => {
            panic!("the upload ended before it was stopped: {result:?}")
        }
        state = stop => state.unwrap(),
    };
    assert_eq!(state.persisted, 1024 * KIB);
    assert_eq!(state.total, None);
    let received = server.body_bytes_received();

    let mut upload = GcsUpload::new(Start::Resume(state), config(None)).unwrap();
    let mut stream = StreamSource::new(items(&source, 8192));
    let mut reads = Vec::new();
    let mut first_range = None;
    let completion = Driver::new(TokioTimer)
        .on_event(|_: &GcsUpload, event: &Event<'_>| {
            match event {
                Event::SourceRead { range } => reads.push(range.clone()),
                Event::Sending { send } if first_range.is_none() => {
                    first_range = send.request.headers().get("content-range").cloned();
                }
                _ => {}
            }
            Ok(())
        })
        .drive(&mut upload, &mut stream, &transport)
        .await
        .unwrap();
    assert!(completion.verified.crc32c);
    assert_eq!(server.object(BUCKET, OBJECT).as_deref(), Some(&source[..]));
    assert_eq!(first_range.unwrap(), "bytes */*");
    // G3: the resume reads the stream from its start once, in order (the uploaded part is
    // compared with the saved checksum; a stream is read through anyway), and sends only what
    // the server does not hold.
    assert_eq!(reads.first().map(|r| r.start), Some(0));
    assert!(
        reads.windows(2).all(|w| w[1].start == w[0].end),
        "a byte was read twice, or skipped"
    );
    assert_eq!(server.body_bytes_received() - received, 1024 * KIB);
    let peak = stream.peak_window();
    assert!(peak <= 2 * CHUNK + 8192, "the window grew to {peak} bytes");
}
