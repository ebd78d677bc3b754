//! Sans-IO resumable uploads: the protocol state machines, and nothing else.
//!
//! This crate opens no sockets or files, reads no clock, spawns nothing, and draws no
//! randomness of its own. An upload describes each request as an [`http::Request`] plus a
//! [`Body`] that names a byte range of *your* source, tells you when to wait, and consumes the
//! responses you hand back. Drivers (blocking over ureq, async over any runtime, or your own
//! HTTP stack) are thin loops around it.
//!
//! Protocols:
//! - [`gcs`]: Google Cloud Storage resumable uploads (XML/signed-URL start, JSON API start,
//!   resuming an existing session), which is also what Twitter's batch compliance
//!   `upload_url` is.
//! - [`ton`]: Twitter TON (Twitter Object Nest) resumable uploads (start, chunks sized to the
//!   server's limits and the observed rate, resume from a saved state) and the single-request
//!   form for files under 64 MiB.
//! - [`media`]: Twitter/X `media/upload` chunked uploads (INIT, APPEND segments framed as
//!   multipart around your bytes, FINALIZE, STATUS polling), in the v1.1 and X API v2 forms.
//! - [`compliance`]: Twitter/X batch compliance jobs (create the job, upload the ids to its
//!   `upload_url` through [`gcs`], poll the job within the rate limit until it is complete).
//!
//! Shared pieces, used by every protocol: [`range`] (`Content-Range`/`Range`), [`retry`]
//! (policy as plain data, seeded jitter), [`chunk`] (chunk planning), [`checksum`]
//! (CRC32C/MD5), [`response`] (`Location`, server messages), [`secret`] (redaction).
//!
//! # Driving an upload
//!
//! Poll for an [`Action`], do what it says, hand back the result, repeat until
//! [`Action::Done`]; while a body is sent, hand its source bytes to [`Upload::handle_sent`]
//! when the [`Transmit`] asks for them. Here the "network" is a tiny in-memory server, so the
//! example runs:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
//! use resumable_core::{Action, TransportFailure, Upload};
//!
//! /// Your HTTP stack: send `request` with `body`, return the response (any status).
//! fn send(
//!     server: &mut Vec<u8>,
//!     request: &http::Request<()>,
//!     body: &[u8],
//! ) -> Result<http::Response<Bytes>, TransportFailure> {
//!     let builder = http::Response::builder();
//!     let response = if request.method() == http::Method::POST {
//!         builder.status(201).header("location", "https://storage.example/session?upload_id=s")
//!     } else {
//!         server.extend_from_slice(body);
//!         let range = request.headers()["content-range"].to_str().unwrap();
//!         if range.ends_with("/*") || !range.ends_with(&format!("-{}/{}", server.len() - 1, server.len())) {
//!             builder.status(308).header("range", format!("bytes=0-{}", server.len() - 1))
//!         } else {
//!             builder.status(200)
//!         }
//!     };
//!     Ok(response.body(Bytes::new()).unwrap())
//! }
//!
//! let source = vec![7u8; 600 * 1024];
//! let mut config = GcsConfig::new(Some(source.len() as u64));
//! config.chunk_size = 256 * 1024;
//! let start = Start::Xml {
//!     url: "https://storage.example/bucket/ids.txt?X-Goog-Signature=x".parse().unwrap(),
//!     content_type: http::HeaderValue::from_static("text/plain"),
//! };
//! let mut upload = GcsUpload::new(start, config).unwrap();
//!
//! let mut server = Vec::new();
//! let mut now = Instant::now(); // the driver owns the clock
//! let outcome = loop {
//!     match upload.poll_action(now) {
//!         Action::Read(read) => {
//!             // Hand in the bytes the core needs to see (here: to checksum them); an empty
//!             // slice would say the source ends here.
//!             let (a, b) = (read.range.start as usize, read.range.end as usize);
//!             upload.handle_read(now, read.range.start, &source[a..b.min(source.len())]).unwrap();
//!         }
//!         Action::Send(send_action) => {
//!             let r = &send_action.body.source;
//!             let body = &source[r.start as usize..r.end as usize];
//!             if send_action.report_sent {
//!                 // The core checksums these bytes as they go out (a streaming driver hands
//!                 // in each piece as its transport takes it); skipping this only makes the
//!                 // core read them later.
//!                 upload.handle_sent(send_action.id, r.start, body).unwrap();
//!             }
//!             match send(&mut server, &send_action.request, body) {
//!                 Ok(response) => upload.handle_response(now, send_action.id, response).unwrap(),
//!                 Err(failure) => upload.handle_failure(now, send_action.id, failure).unwrap(),
//!             }
//!         }
//!         Action::Wait(until) => now = until, // a real driver sleeps until `until`
//!         // Only a driver with several requests in flight sees this (see below).
//!         Action::Idle => unreachable!("every request is answered before the next poll"),
//!         Action::Done(outcome) => break outcome,
//!     }
//! };
//! let completion = outcome.expect("uploaded");
//! assert_eq!(completion.size, source.len() as u64);
//! assert_eq!(server, source);
//! # let _ = Duration::ZERO;
//! ```
//!
//! # Several requests in flight
//!
//! Each request is handed out once. An upload that allows several at a time
//! ([`Upload::max_in_flight`]: media APPENDs with [`media::MediaConfig::max_in_flight`])
//! hands out the next one on the next poll; when nothing more may go out it answers
//! [`Action::Idle`], and outcomes may be handed in in any order. The loop of a concurrent
//! driver: poll and send until `Idle` (or `Wait`), then hand in whichever outcome arrives
//! first, and poll again. Here three APPENDs go out before any answer, and the answers come
//! back last first:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload};
//! use resumable_core::{Action, Transmit, Upload};
//!
//! let file = vec![1u8; 12];
//! let mut config = MediaConfig::new(ApiVersion::v2(), file.len() as u64, "video/mp4");
//! config.segment_size = 4;
//! config.max_in_flight = 3;
//! let mut upload = MediaUpload::new(config).unwrap();
//! assert_eq!(upload.max_in_flight(), 3);
//!
//! let answer = |send: &Transmit| {
//!     let body = match send.request.uri().path() {
//!         p if p.ends_with("/initialize") => r#"{"data":{"id":"1880028106020515840"}}"#,
//!         p if p.ends_with("/finalize") => r#"{"data":{"id":"1880028106020515840"}}"#,
//!         _ => "", // APPEND: any 2xx
//!     };
//!     http::Response::builder().status(200).body(Bytes::from(body)).unwrap()
//! };
//! let now = Instant::now();
//! let mut in_flight: Vec<Transmit> = Vec::new();
//! let mut most_at_once = 0;
//! let outcome = loop {
//!     match upload.poll_action(now) {
//!         // Send it (here: just keep it), then poll for the next.
//!         Action::Send(send) => {
//!             in_flight.push(send);
//!             most_at_once = most_at_once.max(in_flight.len());
//!         }
//!         // Nothing more may go out: an answer must come first; here the newest's.
//!         Action::Idle | Action::Wait(_) => {
//!             let send = in_flight.pop().expect("Idle means requests are in flight");
//!             upload.handle_response(now, send.id, answer(&send)).unwrap();
//!         }
//!         Action::Read(_) => unreachable!("media never reads"),
//!         Action::Done(outcome) => break outcome,
//!     }
//! };
//! assert_eq!(outcome.unwrap().media_id, "1880028106020515840");
//! assert_eq!(most_at_once, 3);
//! ```
//!
//! # Panics
//!
//! None on any input from the network or the caller: malformed headers and bodies become
//! [`ProtocolViolation`]s, misuse becomes a [`UsageError`]. Every loop is bounded by the
//! retry budget and by the source's size. There is no `unsafe` code.
//!
//! # Secrets
//!
//! Session URIs are bearer capabilities and start headers may carry credentials: `Debug` of
//! every type here redacts them, and no error message contains them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod action;
pub mod checksum;
pub mod chunk;
pub mod compliance;
pub mod driver;
mod engine;
pub mod error;
pub mod gcs;
pub mod ietf;
pub mod media;
pub mod multipart;
pub mod range;
pub mod response;
pub mod retry;
pub mod secret;
pub mod sfv;
mod state;
pub mod ton;
pub mod tus;

pub use action::{
    Action, Body, Progress, Read, RequestId, Stats, Transmit, TransportFailure, Upload,
};
pub use error::{Endpoint, Error, IntegrityError, ProtocolViolation, RetryCause, UsageError};
pub use retry::{RetryPolicy, Retrying};
pub use secret::SessionUri;
pub use state::SavedState;
