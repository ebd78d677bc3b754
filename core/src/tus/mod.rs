//! tus 1.0, the tus resumable upload protocol: its header fields ([`metadata`]:
//! `Upload-Metadata`, the plain-decimal `Upload-Offset` and `Upload-Length`, and the comma
//! lists a server announces on `OPTIONS`), for the state machine that comes later.

pub mod metadata;
