//! What one simulated request did, in the terms the deterministic simulation
//! (`tests/simulation.rs`) checks its invariants in. Shared by the simulated TON, media and
//! compliance servers ([`super::ton`], [`super::media`], [`super::compliance`]) and by every
//! use of [`super::SimServer`] ([`gcs_event`]).

use std::fmt;
use std::mem::discriminant;

use bytes::Bytes;
use http::Response;
use resumable_core::{Error, IntegrityError, ProtocolViolation, TransportFailure};

use super::{Expect, Fate, Reply};

/// What the server did with one request, and what its answer licenses the client to end with.
#[derive(Debug)]
pub enum Event {
    /// Processed and answered truthfully (a partial store is reported truthfully too).
    Answered,
    /// A 2xx to FINALIZE or STATUS saying processing goes on: the next wait is M4's.
    Processing,
    /// No response reached the client (lost before or after the server processed it).
    Transport,
    /// A retryable status (408, 429, 5xx).
    Retryable,
    /// A final refusal (4xx other than 404/410/408/429).
    Refused,
    /// 404/410: the session is gone (or never existed: a lying `Location`).
    Gone,
    /// The session passed its expiry and the server no longer has it.
    Expired,
    /// A 2xx whose body the client must parse, but which is garbage.
    Garbled,
    /// Processing ended `failed` (M4).
    ProcessingFailed,
    /// A lie the client can detect: it must end at once with an error `Must` accepts.
    Lie(Must),
    /// A compliance job's status became `failed` (C3).
    JobFailed,
    /// A compliance job's status became `expired`: its upload did not arrive before
    /// `upload_expires_at` (C2, C3).
    JobExpired,
    /// A request to a compliance job's `upload_url` after `upload_expires_at`, refused (C2).
    UploadUrlExpired,
}

/// The error a detectable lie must end the upload with.
pub enum Must {
    /// Exactly this error.
    Be(Error),
    /// An error of the same kind: the same variant (and the same inner variant of a protocol
    /// violation or integrity error), whatever its numbers.
    Like(Error),
    /// Any error this predicate accepts (named for the failure message).
    Match(&'static str, fn(&Error) -> bool),
}

impl Must {
    /// Whether `error` is what the lie calls for.
    pub fn accepts(&self, error: &Error) -> bool {
        match self {
            Must::Be(e) => e == error,
            Must::Like(e) => match (e, error) {
                (Error::Protocol(a), Error::Protocol(b)) => discriminant(a) == discriminant(b),
                (Error::Integrity(a), Error::Integrity(b)) => discriminant(a) == discriminant(b),
                (a, b) => discriminant(a) == discriminant(b),
            },
            Must::Match(_, f) => f(error),
        }
    }

    /// Any protocol violation.
    pub fn protocol() -> Must {
        Must::Match("a protocol violation", |e| matches!(e, Error::Protocol(_)))
    }
}

impl fmt::Debug for Must {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Must::Be(e) => write!(f, "Be({e:?})"),
            Must::Like(e) => write!(f, "Like({e:?})"),
            Must::Match(what, _) => write!(f, "Match({what})"),
        }
    }
}

/// One request's effect on the server and the answer the client gets.
#[derive(Debug)]
pub struct Exchange {
    /// The response, or the transport failure the driver reports instead.
    pub outcome: Result<Response<Bytes>, TransportFailure>,
    /// What happened.
    pub event: Event,
    /// Source bytes of the body the server newly stored.
    pub new: u64,
    /// Source bytes of the body the server already held (sent again).
    pub dup: u64,
    /// TON: the answer's `Range` has two readings and the client must take the smaller (T5),
    /// so it may send one byte again.
    pub ambiguous: bool,
}

impl Exchange {
    /// An exchange that stored nothing.
    pub fn new(outcome: Result<Response<Bytes>, TransportFailure>, event: Event) -> Self {
        Exchange {
            outcome,
            event,
            new: 0,
            dup: 0,
            ambiguous: false,
        }
    }
}

/// What the simulated GCS server's `reply` to a request means (`start`: the request was a
/// session start, G1, G2): its lie, if it told one, with the error the client must end with;
/// else what its fate did.
pub fn gcs_event(reply: &Reply, start: bool) -> Event {
    if let Some(expect) = &reply.lie {
        return Event::Lie(match expect {
            Expect::Exact(e) => Must::Like(e.clone()),
            // A bare session of unknown size learns the size from the source and then finds
            // the object short (G3, G7).
            Expect::Integrity => Must::Match("an unproven or wrong object", |e| {
                matches!(e, Error::Integrity(_))
            }),
            Expect::PrematureCompletion => Must::Match("premature completion", |e| {
                matches!(
                    e,
                    Error::Protocol(ProtocolViolation::PrematureCompletion { .. })
                        | Error::Integrity(IntegrityError::Size { .. })
                )
            }),
        });
    }
    match reply.fate {
        Fate::Answer(_) => Event::Answered,
        Fate::Status { .. } => Event::Retryable,
        Fate::DropBefore(_) | Fate::DropAfter { .. } => Event::Transport,
        Fate::Gone(_) if !start => Event::Gone,
        Fate::Gone(_) | Fate::Refuse(_) => Event::Refused,
    }
}
