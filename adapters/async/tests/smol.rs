//! The scenario suite and the cancellation contract on smol, over a plain hyper 1 client on
//! smol's sockets and `async-io`'s timer: the driver needs no tokio.

mod common;

use common::*;

fn run(name: &str) {
    let scenario = scenario(name);
    let run = smol::block_on(run_scenario(
        &scenario,
        &mut smol_hyper_transport(),
        SmolTimer,
    ));
    (scenario.check)(&run);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name))
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

// Cancellation on smol: drop the upload future mid-chunk, resume from the saved state.
#[test]
fn dropping_the_future_mid_chunk_then_resuming_from_the_saved_state() {
    smol::block_on(drop_mid_chunk_then_resume(
        Resume::FromSavedState,
        &mut smol_hyper_transport(),
        SmolTimer,
    ));
}

// A file opened with smol's own `AsyncRead + AsyncSeek` (futures-io) is a source as it is.
#[test]
fn a_smol_file_is_a_seekable_source() {
    use resumable_async::{Driver, SeekableSource};
    use resumable_core::gcs::GcsUpload;
    use resumable_server::{Server, ServerConfig};

    smol::block_on(async {
        let server = Server::start(ServerConfig::default()).unwrap();
        let source = data(700 * KIB);
        let path =
            std::env::temp_dir().join(format!("resumable-async-smol-{}", std::process::id()));
        smol::fs::write(&path, &source).await.unwrap();
        let file = smol::fs::File::open(&path).await.unwrap();
        let mut upload = GcsUpload::new(
            xml_start(start_url(&server, "gcs.chunk#2=persist:1000")),
            config(Some(source.len() as u64)),
        )
        .unwrap();
        let completion = Driver::new(SmolTimer)
            .drive(
                &mut upload,
                &mut SeekableSource::new(file),
                &smol_hyper_transport(),
            )
            .await;
        let _ = smol::fs::remove_file(&path).await;
        assert_eq!(completion.unwrap().size, source.len() as u64);
        assert_eq!(server.object(BUCKET, OBJECT).as_deref(), Some(&source[..]));
    });
}
