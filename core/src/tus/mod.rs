//! tus 1.0, the tus resumable upload protocol (rules U1–U15 in `docs/protocols/tus.md`): its
//! header fields ([`metadata`]: `Upload-Metadata`, the plain-decimal `Upload-Offset` and
//! `Upload-Length`, and the comma lists a server announces on `OPTIONS`) and the upload
//! state machine ([`upload`], re-exported here: [`TusUpload`]), and the parallel upload of one
//! source in parts joined by concatenation ([`concat`](mod@concat): [`TusParallelUpload`], U13).

pub mod concat;
pub mod metadata;
pub mod upload;

pub use concat::{TusParallelResumeState, TusParallelStart, TusParallelUpload, TusPartState};
pub use upload::{
    ChecksumAlgorithm, TusCompletion, TusConfig, TusResumeState, TusServerInfo, TusStart, TusUpload,
};
