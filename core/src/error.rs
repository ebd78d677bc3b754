//! Errors, split by who is at fault.
//!
//! [`UsageError`]: the caller broke the rules of the API or gave bad input (fix the calling
//! code or the input). [`Error::Server`]: the server refused (a final 4xx/5xx).
//! [`ProtocolViolation`]: the server broke the protocol. [`Error::Transport`] and
//! [`Error::RetriesExhausted`]: the network. [`IntegrityError`]: what the server stored is not
//! what was sent. No message ever contains a session URI, header value or credential.

use std::fmt;

use http::StatusCode;

use crate::action::TransportFailure;

/// Why an upload ended without success. Returned in [`crate::Action::Done`]; once an upload
/// has failed, every later poll returns the same error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller misused the API or gave bad input.
    #[error("usage error: {0}")]
    Usage(#[from] UsageError),
    /// The server answered with a status that ends the upload (not retryable).
    #[error("server refused the request: {status}{}", message_suffix(.message))]
    Server {
        /// The HTTP status.
        status: StatusCode,
        /// The server's own error message, when its body carried one (trimmed, at most 200
        /// characters).
        message: Option<String>,
    },
    /// The server's answer breaks the protocol; continuing could lose or corrupt data.
    #[error("protocol violation by the server: {0}")]
    Protocol(#[from] ProtocolViolation),
    /// The transport failed in a way that retrying will not mend (a name that does not
    /// resolve, a certificate that is not trusted, after one retry), or the retry policy does
    /// not retry transport failures.
    #[error("{}", crate::action::TransportDisplay(*.failure, .endpoint.as_ref()))]
    Transport {
        /// How the transport failed.
        failure: TransportFailure,
        /// The server the failed request went to, when it had an address.
        endpoint: Option<Endpoint>,
    },
    /// Retryable failures went on until the retry budget or deadline ran out.
    #[error("gave up after {attempts} failed attempts; the last: {}", RetryCauseDisplay(.last, .endpoint.as_ref()))]
    RetriesExhausted {
        /// How many consecutive attempts failed.
        attempts: u32,
        /// The last failure seen.
        last: RetryCause,
        /// The server the last failed request went to, when it had an address.
        endpoint: Option<Endpoint>,
    },
    /// The server asked to wait (`Retry-After`, or a rate-limit reset) longer than the retry
    /// deadline allows ([`crate::RetryPolicy::retry_deadline`]): the upload stops rather than
    /// wait past it. It can be resumed later, or retried with a longer deadline.
    #[error(
        "the server asked to wait {} ({}), longer than the retry deadline of {} allows",
        crate::retry::Wait(*.wait),
        RetryCauseDisplay(.last, .endpoint.as_ref()),
        crate::retry::Wait(*.deadline)
    )]
    WaitBeyondDeadline {
        /// How long the server asked to wait.
        wait: std::time::Duration,
        /// The retry deadline in force.
        deadline: std::time::Duration,
        /// The failure that came with the request to wait.
        last: RetryCause,
        /// The server that asked, when it had an address.
        endpoint: Option<Endpoint>,
    },
    /// The upload session no longer exists (404/410): the upload must start over (G9).
    #[error("the upload session is gone ({status}); the upload must start again")]
    SessionGone {
        /// The HTTP status that said so.
        status: StatusCode,
    },
    /// The upload was cancelled by the caller (G10).
    #[error("the upload was cancelled")]
    Cancelled,
    /// What the server holds differs from what was sent.
    #[error("integrity check failed: {0}")]
    Integrity(#[from] IntegrityError),
    /// A batch compliance job ran its course without completing: it failed or expired, its
    /// upload URL expired, or the poll deadline passed (C2, C3).
    #[error(transparent)]
    Compliance(#[from] crate::compliance::JobError),
    /// The upload passed its expiry time (TON's `Expires`, T3) and the server no longer has
    /// it (it answered 404/410 at or after that time): the upload must start again.
    #[error(
        "the upload expired and the server no longer has it ({status}); the upload must start again"
    )]
    Expired {
        /// The HTTP status that said the upload is gone.
        status: StatusCode,
    },
    /// The Twitter/X API refused with a typed error body (M5): v1.1
    /// `{"errors":[{"code","message"}]}` or `{"request","error"}`, or a v2 RFC 7807 problem.
    #[error(
        "API error {status}{}{}{}",
        code_suffix(.code),
        problem_suffix(.problem),
        message_suffix(.message)
    )]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The API's error code (`errors[0].code`), when given.
        code: Option<i64>,
        /// The RFC 7807 problem `type` (a URI naming the kind of problem), when given.
        problem: Option<String>,
        /// The API's own message (trimmed, at most 200 characters).
        message: Option<String>,
    },
    /// Server-side media processing failed: `state: failed`, or an `error` object in
    /// `processing_info`, which is terminal whatever the state says (M4).
    #[error(
        "media processing failed{}{}{}",
        code_suffix(.code),
        name_suffix(.name),
        message_suffix(.message)
    )]
    ProcessingFailed {
        /// `error.code`, when given.
        code: Option<i64>,
        /// `error.name` (for example `InvalidMedia`), when given.
        name: Option<String>,
        /// `error.message`, when given.
        message: Option<String>,
    },
    /// Media processing was still unfinished after the configured number of status polls (M4).
    #[error("media processing still unfinished after {polls} status polls")]
    ProcessingUnfinished {
        /// How many status answers said "still processing".
        polls: u32,
    },
    /// A bug in this library: the upload reached a state it has no way on from. It ends
    /// rather than loop or panic; please report it.
    #[error("internal error in resumable-core: {0}")]
    Internal(&'static str),
    /// The media id reached its `expires_after_secs` before the upload finished (M5): the
    /// upload must start again with a new INIT.
    #[error(
        "the media id expired ({after_secs} s after the answer that last set its deadline); the upload must start again"
    )]
    MediaExpired {
        /// The `expires_after_secs` INIT's answer gave.
        after_secs: u64,
    },
    /// The server does not offer what this upload needs (tus: a protocol version or an
    /// extension its discovery answer does not list, U2). Nothing was uploaded.
    #[error("the server does not support {0}")]
    Unsupported(&'static str),
}

fn code_suffix(code: &Option<i64>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

fn problem_suffix(problem: &Option<String>) -> String {
    problem
        .as_ref()
        .map(|p| format!(" [{p}]"))
        .unwrap_or_default()
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
}

fn message_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

impl Error {
    /// Whether the same upload session may still be resumed later (from a saved
    /// [`crate::gcs::ResumeState`]) after this error: true for network trouble and retry
    /// exhaustion, false when the session is gone, cancelled, or the data is in question.
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            Error::Transport { .. }
                | Error::RetriesExhausted { .. }
                | Error::WaitBeyondDeadline { .. }
        ) || matches!(self, Error::Server { status, .. } if status.is_server_error())
            || matches!(self, Error::Compliance(e) if e.is_resumable())
    }
}

/// The server a request went to: its host and port (the scheme's default when the URL has
/// none). Host names are not secrets; a URL's path, query and user information never appear.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host name or address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Endpoint {
    /// The endpoint of an absolute http(s) URI; `None` for a URI without a host.
    pub fn of(uri: &http::Uri) -> Option<Endpoint> {
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        Some(Endpoint {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A [`RetryCause`] with the server it came from, in words.
pub(crate) struct RetryCauseDisplay<'a>(pub(crate) &'a RetryCause, pub(crate) Option<&'a Endpoint>);

impl fmt::Display for RetryCauseDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (RetryCause::Transport(t), endpoint) => {
                crate::action::TransportDisplay(*t, endpoint).fmt(f)
            }
            (RetryCause::Status(s), Some(e)) => write!(f, "HTTP {s} from {}", e.host),
            (cause, _) => cause.fmt(f),
        }
    }
}

/// The last failure of a run of retried attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryCause {
    /// The server answered with this retryable status.
    Status(StatusCode),
    /// The transport failed.
    Transport(TransportFailure),
    /// The server answered but stored nothing new.
    NoProgress,
}

impl fmt::Display for RetryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryCause::Status(s) => write!(f, "HTTP {s}"),
            RetryCause::Transport(t) => write!(f, "{t}"),
            RetryCause::NoProgress => f.write_str("the server stored no new bytes"),
        }
    }
}

/// The caller broke the rules of the API or gave bad input. The upload's state is unchanged
/// when a `handle_*` call returns one; when construction returns one, there is no upload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A response or failure was handed in for a request that is not in flight.
    #[error("no request with id {0} is in flight")]
    UnknownRequest(u64),
    /// Source bytes were handed in that were not asked for.
    #[error("source bytes were handed in at offset {offset}, but {expected}")]
    UnexpectedRead {
        /// Where the handed-in bytes start.
        offset: u64,
        /// What the upload was waiting for, in words.
        expected: &'static str,
    },
    /// More source bytes were handed in than the read asked for.
    #[error("{given} source bytes were handed in, but only {asked} were asked for")]
    ReadTooLong {
        /// How many were asked for.
        asked: u64,
        /// How many were given.
        given: u64,
    },
    /// The source ended before the total size the upload was told.
    #[error("the source ended at byte {ended_at}, but its size was given as {declared}")]
    SourceTooShort {
        /// Where the source ended.
        ended_at: u64,
        /// The size the upload was told.
        declared: u64,
    },
    /// The source differs from the one an interrupted upload was sending: its first
    /// `checked` bytes do not have the checksum the saved resume state recorded. Nothing was
    /// sent; the session is untouched and can still be resumed with the original source.
    #[error(
        "the input differs from the interrupted upload's: its first {checked} bytes are not the bytes already uploaded"
    )]
    SourceChanged {
        /// How many bytes from the start were compared.
        checked: u64,
    },
    /// Input was handed in after the upload ended.
    #[error("the upload is already over")]
    Finished,
    /// A chunk size that the protocol does not allow.
    #[error("invalid chunk size {size}: {rule}")]
    ChunkSize {
        /// The size given.
        size: u64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A URL or header value the protocol cannot use.
    #[error("invalid {what}: {why}")]
    InvalidInput {
        /// What was invalid (for example "upload URL").
        what: &'static str,
        /// Why, in words (never the value itself, which may be secret).
        why: &'static str,
    },
    /// A saved resume state does not fit this upload.
    #[error("the saved resume state does not fit: {0}")]
    StateMismatch(&'static str),
    /// The file cannot be uploaded in the protocol's largest plan (media/upload: 1000 segments
    /// of at most 5,000,000 bytes, M2). Nothing was sent.
    #[error("the file's {total} bytes exceed the most the protocol can take ({max} bytes)")]
    SourceTooLarge {
        /// The file's size.
        total: u64,
        /// The largest size the protocol can take.
        max: u64,
    },
}

/// The server broke the protocol. Each variant names the rule (see `docs/protocols`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A `Range` header that cannot be parsed (G5, T5).
    #[error("malformed Range header")]
    MalformedRange,
    /// A `Range` that does not start at byte 0 (G5).
    #[error("Range does not start at byte 0 (starts at {start})")]
    RangeNotFromZero {
        /// Where it started.
        start: u64,
    },
    /// The server claims to hold more bytes than were ever sent (G5, T5).
    #[error("server claims {claimed} bytes stored, but at most {sent} were sent")]
    RangeBeyondSent {
        /// Bytes the server claims.
        claimed: u64,
        /// The most that could be there.
        sent: u64,
    },
    /// The server now holds fewer bytes than it acknowledged before.
    #[error("server reports {now} bytes stored after acknowledging {before}")]
    PersistedWentBackwards {
        /// Acknowledged earlier.
        before: u64,
        /// Reported now.
        now: u64,
    },
    /// The start response had no usable `Location` (G1, G2, T3).
    #[error("the start response has no usable Location header")]
    MissingLocation,
    /// The server reported the upload complete before all bytes were sent (G7).
    #[error("server reported completion after {sent} of {total} bytes")]
    PrematureCompletion {
        /// Bytes sent so far.
        sent: u64,
        /// Bytes in the source (or 0 when not yet known).
        total: u64,
    },
    /// A status the protocol does not allow at this point.
    #[error("unexpected HTTP status {0}")]
    UnexpectedStatus(StatusCode),
    /// A response body or header the protocol requires is missing or malformed.
    #[error("malformed response: {0}")]
    MalformedResponse(&'static str),
    /// The server's chunk-size limits cannot be honoured (T3).
    #[error("unusable chunk-size limits: {0}")]
    ChunkLimits(&'static str),
    /// A `Range: 0-N` that fits no reading T5 allows: neither N+1 nor N bytes is at most what
    /// was sent, not below what was acknowledged, short of the whole upload (a 308 means
    /// incomplete), and either the end of the chunk sent or a multiple of the minimum chunk
    /// size.
    #[error(
        "Range 0-{n} fits no reading: neither {n}+1 nor {n} bytes agrees with the chunk sent (ending at {chunk_end}) or is a multiple of the minimum chunk size {min_chunk}"
    )]
    RangeUnreadable {
        /// The N of `Range: 0-N`.
        n: u64,
        /// The end (exclusive) of the chunk the 308 answered.
        chunk_end: u64,
        /// The server's minimum chunk size.
        min_chunk: u64,
    },
    /// The server's upload has another length than the source (tus `Upload-Length`, U3).
    #[error("the server's upload is {server} bytes long, but the source has {source_len}")]
    LengthDiffers {
        /// The length the server reports.
        server: u64,
        /// The source's size.
        source_len: u64,
    },
}

/// What the server holds differs from what was sent (G7).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The object's size differs from the source's.
    #[error("server stored {stored} bytes, but {sent} were sent")]
    Size {
        /// Size the server reported.
        stored: u64,
        /// Size of the source.
        sent: u64,
    },
    /// The server's CRC32C differs from the one computed over the source.
    #[error("CRC32C mismatch: server {server:08x}, source {computed:08x}")]
    Crc32c {
        /// The server's value.
        server: u32,
        /// The value computed over the bytes handed in.
        computed: u32,
    },
    /// The server's MD5 differs from the one computed over the source.
    #[error("MD5 mismatch")]
    Md5,
    /// The server says the upload is complete, but its answer carries no checksum to compare
    /// with the source, and the server holds bytes this upload cannot vouch for (a session
    /// whose history it did not see, or bytes sent by an earlier run that were not checked):
    /// the stored object may differ from the source (G7).
    #[error(
        "the server reports a complete object of {size} bytes, but gives no checksum to compare with the source, and part of it was not uploaded by this run; the stored object may differ from the source"
    )]
    Unproven {
        /// The size of the object the server reports (or the source's size).
        size: u64,
    },
}
