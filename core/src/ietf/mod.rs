//! The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload), which
//! is not yet an RFC: the structured header fields it defines ([`limit`]: `Upload-Limit`,
//! `Upload-Offset`, `Upload-Length`, `Upload-Complete`), read and written as exactly as the
//! state machine that comes later needs them.

pub mod limit;
