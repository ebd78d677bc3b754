//! S3-compatible multipart uploads (Amazon S3, the GCS XML API, R2, MinIO): the pure pieces the
//! upload is built from.
//!
//! - [`plan`]: which bytes go in which numbered part, within S3's limits (S4).
//! - [`xml`]: reading every XML answer (create, list parts, complete, errors) and writing the
//!   Complete request body (S2, S5–S7, S9).
//! - [`checksum`]: part CRC32Cs and the object's CRC32C in its `FULL_OBJECT` and `COMPOSITE`
//!   forms, without reading the source again (S11).
//! - [`upload`]: the upload itself on the request engine: create, parts in parallel, complete
//!   with proof, resume from a ledger reconciled with ListParts, abort (S1–S12).

pub mod checksum;
pub mod plan;
pub mod upload;
pub mod xml;
