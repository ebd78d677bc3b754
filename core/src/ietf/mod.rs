//! The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload, rules
//! R1–R19 in `docs/protocols/ietf.md`), which is not yet an RFC: the structured header fields
//! it defines ([`limit`]: `Upload-Limit`, `Upload-Offset`, `Upload-Length`, `Upload-Complete`)
//! and the upload state machine at a chosen interop version ([`upload`], re-exported here:
//! [`IetfUpload`]).

pub mod limit;
pub mod upload;

pub use upload::{
    IetfCompletion, IetfConfig, IetfResumeState, IetfStart, IetfUpload, LATEST_INTEROP_VERSION,
    OLDEST_INTEROP_VERSION,
};
