//! The async driver for [`resumable_core`] uploads, on any runtime: a loop that polls an
//! upload, reads the source bytes it asks for, sends its requests, sleeps through its waits,
//! and hands every result back. All protocol decisions (chunk sizes, headers, retries,
//! backoff, status queries) are the core's; this crate only does I/O. It shares nothing with
//! the blocking driver but the core.
//!
//! - [`Driver`] runs the loop, with a hook ([`Driver::on_event`]: save the resume state, show
//!   progress). [`drive`] is the loop without a hook.
//! - [`Source`]: [`SeekableSource`] streams each request's range from any `AsyncRead +
//!   AsyncSeek` (a file) in 64 KiB pieces; [`StreamSource`] keeps only the unacknowledged
//!   window of a `Stream` of `Bytes` of unknown size.
//! - [`Transport`]: [`ReqwestTransport`] (the `reqwest` feature: no redirects, statuses are
//!   responses, G12), any closure ([`transport_fn`]), or your own HTTP stack (see
//!   `examples/hyper_client.rs`: plain hyper in a few lines). A request's body is a
//!   [`RequestBody`], an `http_body::Body` and a `Stream` of exactly `Content-Length` bytes.
//! - [`Timer`]: the runtime's clock and sleep; [`TokioTimer`] (the `tokio` feature), or a
//!   few lines for smol or any other executor.
//!
//! The I/O traits are `futures-io`'s: they belong to no runtime (smol's and async-std's types
//! implement them), and tokio's types are one adapter away ([`SeekableSource::tokio`], or
//! `tokio_util::compat`). Choosing tokio's traits instead would tie every user to tokio.
//!
//! # Cancellation
//!
//! Dropping the future of [`Driver::drive`] at any await point interrupts the upload and leaves
//! a resume state that resumes correctly, provided the hook saved the resume state at every
//! [`Event::Sending`] (before the request's first byte leaves; the core counts the request's
//! bytes as possibly stored from the moment it hands the request out) and at every
//! [`Event::Response`]. The request in flight is abandoned: its body ends with an error, so the
//! transport closes the connection instead of completing a short request, and the server
//! keeps at most what arrived. Resume from the saved state (GCS: `Start::Resume`, whose first
//! request is a status query), or drive the same upload again with the same [`Driver`] (it
//! reports the abandoned request as failed, and the upload queries the server). See
//! [`Driver`'s documentation](Driver#cancellation).
//!
//! # Example
//!
//! Upload a file to a signed URL on tokio, saving the resume state before every request and
//! stopping on Ctrl-C (by dropping the future):
//!
//! ```no_run
//! use resumable_async::{Driver, Event, ReqwestTransport, SeekableSource, TokioTimer};
//! use resumable_core::Upload as _;
//! use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
//!
//! # fn save(_: &resumable_core::gcs::ResumeState) -> std::io::Result<()> { Ok(()) }
//! # async fn ctrl_c() {}
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let file = tokio::fs::File::open("ids.txt").await?;
//! let config = GcsConfig::new(Some(file.metadata().await?.len()));
//! let start = Start::Xml {
//!     url: "https://storage.googleapis.com/bucket/ids.txt?X-Goog-Signature=…".parse()?,
//!     content_type: http::HeaderValue::from_static("text/plain"),
//! };
//! let mut upload = GcsUpload::new(start, config)?;
//! let transport = ReqwestTransport::new()?;
//! let mut source = SeekableSource::tokio(file);
//! let mut driver = Driver::new(TokioTimer).on_event(|upload: &GcsUpload, event: &Event<'_>| {
//!     if let Event::Sending { .. } | Event::Response { .. } = event {
//!         if let Some(state) = upload.resume_state() {
//!             save(&state)?;
//!         }
//!     }
//!     Ok(())
//! });
//! tokio::select! {
//!     result = driver.drive(&mut upload, &mut source, &transport) => {
//!         println!("uploaded {} bytes", result?.size);
//!     }
//!     () = ctrl_c() => println!("interrupted; the saved state resumes it"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same loop against a scripted server (a closure), on `futures`' executor with a timer
//! that does not really sleep:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use futures::StreamExt as _;
//! use resumable_async::{SeekableSource, Timer, drive, transport_fn};
//! use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
//!
//! struct NoWait;
//! impl Timer for NoWait {
//!     fn now(&mut self) -> Instant { Instant::now() }
//!     async fn sleep_until(&mut self, _: Instant) {}
//! }
//!
//! let data = vec![7u8; 1000];
//! let start = Start::Xml {
//!     url: "https://storage.example/b/o?X-Goog-Signature=x".parse().unwrap(),
//!     content_type: http::HeaderValue::from_static("text/plain"),
//! };
//! let mut upload = GcsUpload::new(start, GcsConfig::new(Some(1000))).unwrap();
//! let stored = std::cell::RefCell::new(Vec::new());
//! let server = transport_fn(|request| {
//!     let stored = &stored;
//!     async move {
//!         let response = http::Response::builder();
//!         let response = if request.method() == http::Method::POST {
//!             response.status(201).header("location", "https://storage.example/s?upload_id=1")
//!         } else {
//!             let mut body = request.into_body();
//!             while let Some(piece) = body.next().await {
//!                 stored.borrow_mut().extend_from_slice(&piece.unwrap());
//!             }
//!             response.status(200)
//!         };
//!         Ok(response.body(Bytes::new()).unwrap())
//!     }
//! });
//! let mut source = SeekableSource::new(futures::io::Cursor::new(&data));
//! let completion =
//!     futures::executor::block_on(drive(&mut upload, &mut source, &server, NoWait)).unwrap();
//! assert_eq!(completion.size, 1000);
//! assert_eq!(stored.into_inner(), data);
//! ```
//!
//! # Features
//!
//! - `reqwest` (default): [`ReqwestTransport`]. Implies `tokio`.
//! - `rustls` (default): HTTPS for it through rustls (ring provider, webpki roots, as the
//!   blocking driver), handed to reqwest as a ready configuration. It turns on reqwest's
//!   `rustls-no-provider`, so another `reqwest::Client` in the same program needs a rustls
//!   provider of its own (reqwest's default `rustls` feature, or one installed process-wide).
//! - `tokio` (default): [`TokioTimer`] and [`SeekableSource::tokio`].
//!
//! Without default features the crate needs no runtime at all.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod drive;
#[cfg(feature = "reqwest")]
mod reqwest_transport;
mod source;
mod timer;
mod transport;

pub use body::{BodyError, RequestBody};
pub use drive::{Driver, NoHook, drive};
#[cfg(feature = "reqwest")]
pub use reqwest_transport::{BuildError, ReqwestOptions, ReqwestTransport};
pub use resumable_core::driver::{
    BodyProgress, DriveError, Event, HookError, READ_PIECE, SourceError, StreamError,
};
pub use source::{SeekableSource, Source, StreamSource};
pub use timer::Timer;
#[cfg(feature = "tokio")]
pub use timer::TokioTimer;
pub use transport::{Exchange, Transport, transport_fn};
