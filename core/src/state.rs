//! One type for the resume state of any protocol, for a driver that saves uploads of several
//! kinds in one format (the command-line tool's state file).

use crate::compliance::ComplianceResumeState;
use crate::gcs::ResumeState;
use crate::ietf::IetfResumeState;
use crate::media::MediaResumeState;
use crate::multipart::upload::S3ResumeState;
use crate::ton::TonResumeState;
use crate::tus::{TusParallelResumeState, TusResumeState};

/// The resume state of an upload of any protocol in this crate, tagged by protocol: with the
/// `serde` feature it is written as `{"gcs": {…}}`, `{"ton": {…}}`, `{"media": {…}}`,
/// `{"compliance": {…}}`, `{"tus": {…}}`, `{"tusparallel": {…}}` or `{"ietf": {…}}`.
///
/// Every [`Upload::State`](crate::Upload::State) of this crate converts into it (`into()`);
/// take the protocol's own state back out with a `match` before resuming.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
// A saved state is built once per save; boxing the larger ones would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum SavedState {
    /// A Google Cloud Storage resumable session.
    Gcs(ResumeState),
    /// A TON resumable upload.
    Ton(TonResumeState),
    /// A media/upload chunked upload.
    Media(MediaResumeState),
    /// A batch compliance job.
    Compliance(ComplianceResumeState),
    /// An S3 multipart upload (written `{"s3": {…}}`).
    S3(S3ResumeState),
    /// A tus 1.0 upload.
    Tus(TusResumeState),
    /// An upload of the IETF resumable-upload draft.
    Ietf(IetfResumeState),
    /// A tus 1.0 upload in parallel parts joined by concatenation (written
    /// `{"tusparallel": {…}}`).
    TusParallel(TusParallelResumeState),
}

impl SavedState {
    /// The protocol's name, as the tag says it.
    pub fn protocol(&self) -> &'static str {
        match self {
            SavedState::Gcs(_) => "gcs",
            SavedState::Ton(_) => "ton",
            SavedState::Media(_) => "media",
            SavedState::Compliance(_) => "compliance",
            SavedState::S3(_) => "s3",
            SavedState::Tus(_) => "tus",
            SavedState::Ietf(_) => "ietf",
            SavedState::TusParallel(_) => "tusparallel",
        }
    }

    /// The fingerprint of the input the state was saved for: check it against the input
    /// before resuming.
    pub fn fingerprint(&self) -> &str {
        match self {
            SavedState::Gcs(s) => &s.fingerprint,
            SavedState::Ton(s) => &s.fingerprint,
            SavedState::Media(s) => &s.fingerprint,
            SavedState::Compliance(s) => &s.fingerprint,
            SavedState::S3(s) => &s.fingerprint,
            SavedState::Tus(s) => &s.fingerprint,
            SavedState::Ietf(s) => &s.fingerprint,
            SavedState::TusParallel(s) => &s.fingerprint,
        }
    }
}

impl From<ResumeState> for SavedState {
    fn from(state: ResumeState) -> Self {
        SavedState::Gcs(state)
    }
}

impl From<TonResumeState> for SavedState {
    fn from(state: TonResumeState) -> Self {
        SavedState::Ton(state)
    }
}

impl From<MediaResumeState> for SavedState {
    fn from(state: MediaResumeState) -> Self {
        SavedState::Media(state)
    }
}

impl From<ComplianceResumeState> for SavedState {
    fn from(state: ComplianceResumeState) -> Self {
        SavedState::Compliance(state)
    }
}

impl From<S3ResumeState> for SavedState {
    fn from(state: S3ResumeState) -> Self {
        SavedState::S3(state)
    }
}

impl From<TusResumeState> for SavedState {
    fn from(state: TusResumeState) -> Self {
        SavedState::Tus(state)
    }
}

impl From<IetfResumeState> for SavedState {
    fn from(state: IetfResumeState) -> Self {
        SavedState::Ietf(state)
    }
}

impl From<TusParallelResumeState> for SavedState {
    fn from(state: TusParallelResumeState) -> Self {
        SavedState::TusParallel(state)
    }
}
