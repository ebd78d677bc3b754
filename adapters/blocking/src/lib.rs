//! The blocking driver for [`resumable_core`] uploads: a loop that polls an upload, reads the
//! source bytes it asks for, sends its requests over ureq, sleeps through its waits, and hands
//! every result back. All protocol decisions (chunk sizes, headers, retries, backoff, status
//! queries) are the core's; this crate only does I/O.
//!
//! - [`Driver`] runs the loop, with hooks: [`Driver::on_event`] (save the resume state, show
//!   progress), [`Driver::interrupt`] (Ctrl-C), [`Driver::clock`] (tests). [`drive`] is the
//!   loop without hooks.
//! - [`Source`]: [`SeekableSource`] streams each request's range straight from a file;
//!   [`StreamSource`] keeps only the not-yet-acknowledged window of stdin or a pipe.
//! - [`Transport`]: [`UreqTransport`] (no redirects, statuses are responses, G12), or any
//!   closure, for scripted exchanges in tests.
//!
//! # Example
//!
//! Upload a file to a signed URL, saving the resume state before every request:
//!
//! ```no_run
//! use std::fs::File;
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use resumable_blocking::{Driver, Event, SeekableSource, UreqTransport};
//! use resumable_core::Upload as _;
//! use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
//!
//! # fn save(_: &resumable_core::gcs::ResumeState) -> std::io::Result<()> { Ok(()) }
//! let file = File::open("ids.txt")?;
//! let config = GcsConfig::new(Some(file.metadata()?.len()));
//! let start = Start::Xml {
//!     url: "https://storage.googleapis.com/bucket/ids.txt?X-Goog-Signature=…".parse()?,
//!     content_type: http::HeaderValue::from_static("text/plain"),
//! };
//! let mut upload = GcsUpload::new(start, config)?;
//! let interrupt = Arc::new(AtomicBool::new(false)); // set it from a Ctrl-C handler
//!
//! let mut driver = Driver::new()
//!     .interrupt(interrupt.clone())
//!     .on_event(|upload: &GcsUpload, event: &Event<'_>| {
//!         if let Event::Sending { .. } | Event::Response { .. } = event {
//!             if let Some(state) = upload.resume_state() {
//!                 save(&state)?;
//!             }
//!         }
//!         Ok(())
//!     });
//! let completion = driver.drive(
//!     &mut upload,
//!     &mut SeekableSource::new(file),
//!     &mut UreqTransport::new(),
//! )?;
//! println!("uploaded {} bytes", completion.size);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same loop against a scripted server (a closure), as the tests do:
//!
//! ```
//! use std::io::{Cursor, Read};
//! use bytes::Bytes;
//! use resumable_blocking::{SeekableSource, drive, transport_fn};
//! use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
//!
//! let data = vec![7u8; 1000];
//! let start = Start::Xml {
//!     url: "https://storage.example/b/o?X-Goog-Signature=x".parse().unwrap(),
//!     content_type: http::HeaderValue::from_static("text/plain"),
//! };
//! let mut upload = GcsUpload::new(start, GcsConfig::new(Some(1000))).unwrap();
//! let mut stored = Vec::new();
//! let mut server = transport_fn(|request, body| {
//!     let response = http::Response::builder();
//!     let response = if request.method() == http::Method::POST {
//!         response.status(201).header("location", "https://storage.example/s?upload_id=1")
//!     } else {
//!         body.read_to_end(&mut stored).unwrap();
//!         response.status(200)
//!     };
//!     Ok(response.body(Bytes::new()).unwrap())
//! });
//! let completion = drive(&mut upload, &mut SeekableSource::new(Cursor::new(&data)), &mut server)
//!     .unwrap();
//! assert_eq!(completion.size, 1000);
//! assert_eq!(stored, data);
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod clock;
mod drive;
mod source;
mod transport;
mod ureq_transport;

pub use body::RequestBody;
pub use clock::{Clock, SystemClock};
pub use drive::{Driver, drive};
pub use resumable_core::driver::{
    BodyProgress, DriveError, Event, HookError, READ_PIECE, SourceError,
};
pub use source::{SeekableSource, Source, StreamSource};
pub use transport::{Transport, transport_fn};
pub use ureq_transport::{UreqOptions, UreqTransport};
