//! A loopback conformance server for the resumable-upload protocols of `docs/protocols`, with
//! fault injection and inspection, for tests, demos (`resumable serve`, `resumable demo`)
//! and benchmarks.
//!
//! It speaks the server side of:
//! - **GCS** resumable uploads (G1–G12): XML/signed-URL and JSON API starts, chunks with
//!   strict `Content-Range` checks, `308` progress, status queries, completion with the
//!   object resource and `x-goog-hash`, cancel, expiry. See [`gcs`] for the behaviour in
//!   detail.
//! - The **GCS JSON API** around an upload, as Google's clients (the Python and Rust
//!   libraries, `gcloud storage`) use it: buckets, object metadata, listing, deletes, ranged
//!   downloads, `uploadType=media` and `multipart` uploads, preconditions, Google's error
//!   shape. See [`json_api`].
//! - **Batch compliance** jobs (C1–C3) whose `upload_url` is this server's own GCS side.
//!   See [`compliance`].
//! - **TON** (T1–T6): single-request and resumable uploads with `X-TON-*` headers, chunk
//!   limits, `308` + `Range: 0-N` (in a configurable form) and a relative `Location`. See
//!   [`ton`].
//! - **Media upload** (M1–M6), v1.1 (`command=INIT|APPEND|FINALIZE|STATUS`, urlencoded and
//!   multipart forms) and v2 (`/2/media/upload/…`, `data`-wrapped), with asynchronous
//!   processing that takes several STATUS polls and can fail. See [`media`].
//!
//! and misbehaves on demand: see [`fault`] for the fault grammar and every fault's effect,
//! and [`retry_test`] for storage-testbench's interface to the same faults (the Retry Test
//! API and `x-goog-emulator-instructions`), so suites written for Google's testbench run
//! unchanged.
//!
//! # Design
//!
//! One thread per connection over `std::net` (blocking I/O, keep-alive, `Content-Length`
//! and chunked bodies; heads parsed by `httparse` and bounded to 64 KiB / 100 fields).
//! Bodies are read in blocks of up to 8 MiB straight into the session's storage (segmented,
//! so growing never copies), and checksummed with hardware CRC32C (and MD5 unless
//! [`ServerConfig::md5`] is off): large bodies on a thread of their own while they arrive,
//! small ones after. Headers the server acts on are parsed by its own strict parsers, not
//! the core's, so that a parsing bug of the core shows. With a handful of clients, threads
//! are simpler than an event loop and as fast: loopback throughput is bound by the kernel's
//! copies.
//!
//! Every wait is bounded: reads and writes time out after [`ServerConfig::idle_timeout`],
//! stalls are capped by [`ServerConfig::max_stall`] and interrupted by shutdown, and
//! [`Server::shutdown`] (or drop) closes every connection and joins the threads within a
//! few seconds. No client input makes it panic.
//!
//! # Example
//!
//! ```
//! use resumable_server::{Server, ServerConfig};
//!
//! let server = Server::start(ServerConfig::default()).unwrap();
//! let url = server.gcs_json_url("bucket", "object.bin");
//! assert!(url.starts_with(&server.base_url()));
//! // … upload with any client, then:
//! assert_eq!(server.object("bucket", "object.bin"), None);
//! assert_eq!(server.body_bytes_received(), 0);
//! assert!(server.ton_bucket_url("ta_partner").ends_with("/1.1/ton/bucket/ta_partner"));
//! assert!(server.media_v1_url().ends_with("/1.1/media/upload.json"));
//! assert!(server.media_v2_base().ends_with("/2/media/upload"));
//! server.shutdown();
//! ```

#![forbid(unsafe_code)]

mod blob;
pub mod compliance;
pub mod fault;
pub mod gcs;
mod hash;
mod http;
pub mod ietf;
pub mod json_api;
pub mod media;
mod multipart;
mod parse;
pub mod retry_test;
pub mod s3;
mod server;
pub mod ton;
pub mod tus;
mod util;

pub use fault::{Fault, FaultScript, FaultSpecError, Ordinals, RequestKind, Rule, Selector};
pub use gcs::{GcsApi, ObjectInfo, SessionInfo};
pub use ietf::IetfUploadInfo;
pub use media::MediaInfo;
pub use server::{LogEntry, Server, ServerConfig};
pub use ton::{TonRangeForm, TonUploadInfo};
pub use tus::TusUploadInfo;
