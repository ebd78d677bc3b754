//! Fault injection: how the server misbehaves on demand.
//!
//! Faults come from three places, merged for each request (later wins for the same fault):
//!
//! 1. **A server script**, [`ServerConfig::faults`](crate::ServerConfig::faults) (what
//!    `resumable serve --faults SPEC` passes): rules that select requests by kind and
//!    ordinal, counted over the whole server.
//! 2. **A session script**: the query parameter `session-faults=SCRIPT` on a start URL (GCS
//!    XML or JSON, TON `?resumable=true`), or the header `x-resumable-session-faults: SCRIPT`
//!    on a start request (those, and media INIT, v1.1 or v2), attaches a script to the
//!    session it creates (GCS session, TON upload, media id); its ordinals count that
//!    session's requests only (so tests sharing one server do not disturb each other). The
//!    header is read on the start only: a client that sends its headers on every request
//!    (the core's media upload does) attaches the script once.
//! 3. **Per request**: the header `x-resumable-fault: FAULTS` or the query parameter
//!    `fault=FAULTS` (percent-encoded) applies `FAULTS` to that request.
//!
//! A malformed spec in a header or query parameter is answered with `400` and the parse
//! error; [`FaultScript::parse`] returns a typed [`FaultSpecError`].
//!
//! # Grammar
//!
//! ```text
//! script    = [ rule ] *( ( ";" / newline ) [ rule ] )   ; blank rules are ignored
//! rule      = selector "=" faults
//! selector  = kind [ "#" ordinals ]                      ; no ordinals: every request
//! ordinals  = N / N ".." M / N ".." / "*"                ; 1-based, inclusive
//! kind      = "*"                                        ; any request
//!           / "gcs"                                      ; any GCS request
//!           / "gcs.start"                                ; POST start, XML (G1) or JSON (G2)
//!           / "gcs.put"                                  ; a chunk or a status query
//!           / "gcs.chunk"                                ; PUT carrying bytes A-B (G4)
//!           / "gcs.query"                                ; PUT bytes */T or */* (G6)
//!           / "gcs.delete"                               ; DELETE session (G10)
//!           / "gcs.other"                                ; downloads, metadata, simple PUT
//!           / "compliance"                               ; any compliance request
//!           / "compliance.create" / "compliance.status" / "compliance.download"
//!           / "ton"                                      ; any TON request
//!           / "ton.single"                               ; POST bucket, whole file (T1)
//!           / "ton.start"                                ; POST bucket?resumable=true (T2)
//!           / "ton.chunk"                                ; PUT Location (T4)
//!           / "ton.other"                                ; GET of a stored object
//!           / "media"                                    ; any media request, v1.1 or v2
//!           / "media.init" / "media.append"              ; M1 / M2, M6
//!           / "media.finalize" / "media.status"          ; M3 / M4, M6
//!           / "media.other"                              ; a command that cannot be told
//!           / "s3"                                       ; any S3 request (path /s3/…)
//!           / "s3.create" / "s3.part" / "s3.list"        ; S2 / S3 / S5
//!           / "s3.complete" / "s3.abort" / "s3.other"    ; S6 / S8 / HEAD, GET, PUT object
//!           / "tus"                                      ; any tus request
//!           / "tus.options" / "tus.create"               ; OPTIONS (U2) / POST creation (U6)
//!           / "tus.head" / "tus.patch" / "tus.delete"    ; U3 / U4 / U12
//!           / "tus.other"                                ; GET, and methods tus has no use for
//!           / "ietf"                                     ; any resumable-upload draft request
//!           / "ietf.options" / "ietf.create"             ; OPTIONS (R12) / creation (R3)
//!           / "ietf.head" / "ietf.append" / "ietf.delete" ; R7 / R9 / R13
//!           / "ietf.other"                               ; GET, and methods the draft has no use for
//! faults    = fault *( "," fault )                       ; a per-request spec is just this
//! fault     = "drop-after:" SIZE
//!           / "persist:" SIZE
//!           / "status:" CODE [ "x" K ]
//!           / "retry-after:" SECONDS
//!           / "retry-after-date:" SECONDS
//!           / "stall:" DURATION
//!           / "rate:" SIZE                             ; bytes per second
//!           / "truncate" [ ":" SIZE ]
//!           / "expire"
//!           / "no-range"
//!           / "no-proof"
//!           / "lie" [ ":" SIZE ]
//!           / "range-start:" SIZE
//!           / "range-form:" ( "plain" / "bytes" / "length" )
//!           / "process" [ ":" K ]
//!           / "fail-processing" [ ":" K ]
//!           / "error-in-progress" [ ":" K ]
//! K         = digits                                     ; 0 to 1000
//! SIZE      = digits [ "k" / "KiB" / "m" / "MiB" / "g" / "GiB" ]   ; powers of 1024
//! DURATION  = digits ( "ms" / "s" )                      ; digits alone are milliseconds
//! ```
//!
//! Spaces around tokens are ignored. Names are case-sensitive.
//!
//! # The faults
//!
//! | fault | effect |
//! |---|---|
//! | `drop-after:N` | Read `N` bytes of the request body, then close the connection without answering. What arrived is kept as GCS does: the session persists the received prefix rounded down to 256 KiB. If the body is `N` bytes or shorter, the request is processed in full and the connection closes instead of answering (the response is lost). |
//! | `persist:N` | Store only the first `N` bytes of this request's body (GCS may persist less than was sent, G5); the `308` says so. No effect when `N` covers the body. |
//! | `status:CODE[xK]` | Answer `CODE` (e.g. 408, 429, 500, 503) instead of handling the request, for this request and the next `K−1` requests of the same scope (the server for server scripts and per-request faults, the session for session scripts). The body is read and discarded; nothing is stored. `429` carries `Retry-After: 1` unless `retry-after` says otherwise. |
//! | `retry-after:S` | Add `Retry-After: S` (seconds) to the answer. |
//! | `retry-after-date:S` | Add `Retry-After` as an HTTP-date `S` seconds from now. |
//! | `rate:R` | Read the request body at most `R` bytes per second (at least 1 KiB), as a link that limits each connection would: a client with several requests in flight on their own connections gets several times the rate. |
//! | `stall:D` | Sleep `D` before answering (after the request was handled), bounded by [`ServerConfig::max_stall`](crate::ServerConfig::max_stall) and cut short by shutdown. |
//! | `truncate[:N]` | Handle the request, then send a head claiming 1024 more body bytes than there are, the first `N` bytes of the body (default 0), and close. |
//! | `expire` | Expire the session before handling the request: it answers `404` (G9), now and after. |
//! | `no-range` | Answer a `308` without `Range` (which claims nothing is stored) while storing as usual. |
//! | `no-proof` | GCS: a completion (`200`, also to a status query of a completed session) carries nothing a client could check the object by: no `x-goog-hash`, no `x-goog-stored-content-length`, and an object resource without `size`, `crc32c` or `md5Hash` (G7). |
//! | `lie[:N]` | Answer a `308` whose `Range` claims `N` bytes (default 262144) more than the server holds: beyond what arrived (G5). |
//! | `range-start:N` | Answer a `308` whose `Range` starts at `N` instead of 0 (G5). |
//! | `range-form:F` | TON only: write this `308`'s `Range` as `F` instead of [`ServerConfig::ton_range_form`](crate::ServerConfig::ton_range_form): `plain` is `0-N` with N the last byte held (T5's documented form), `bytes` is `bytes=0-N`, `length` is `0-L` with L the number of bytes held (the seed's literal words, "current uploaded length"). A correct client reads all three (T5). |
//! | `process[:K]` | Media FINALIZE: process asynchronously, succeeding after `K` STATUS polls (default [`ServerConfig::media_processing_polls`](crate::ServerConfig::media_processing_polls)); `process:0` answers FINALIZE without `processing_info` (ready, M3), whatever the category. On STATUS: succeed `K` polls from now (0: this answer). |
//! | `fail-processing[:K]` | Media: processing ends `failed` with an `error {code,name,message}` (M4). On FINALIZE it forces asynchronous processing that fails at poll `K` (default: when it would have succeeded; `K` = 0: FINALIZE answers `failed`); on STATUS, `K` polls from now (0: this answer; no `K`: when it would have succeeded). |
//! | `error-in-progress[:K]` | Media: like `fail-processing`, but the final answer says `state: in_progress` and carries the `error` object (M4: an `error` is terminal whatever the state). |
//!
//! A processing fault on STATUS acts on every poll it selects, while processing is
//! unfinished: `media.status=process:1` moves the end one poll ahead at each poll and never
//! ends; select one poll (`media.status#2=process:0`).
//!
//! Where a fault has no meaning it does nothing: `persist`, `no-range`, `lie`,
//! `range-start` and `range-form` shape `308` answers (GCS and TON; `persist` also cuts a
//! media APPEND's segment, see below); the processing faults act on media FINALIZE and
//! STATUS only.
//!
//! ## TON (T1–T6)
//!
//! `drop-after`, `persist`, `status`, `retry-after`, `stall`, `truncate`, `expire`,
//! `no-range`, `lie`, `range-start` and `range-form` act on chunks as on GCS chunks, with
//! TON's granule: a body cut short keeps the received prefix rounded down to the upload's
//! minimum chunk size. `persist:N` stores exactly `N` more bytes: with `N` not a multiple of
//! the minimum chunk size, the `308` claims a count a client cannot prove (T5). `expire`
//! makes the upload answer `404` from then on.
//!
//! ## Media (M1–M6)
//!
//! `drop-after:N` on an APPEND cut short stores nothing (a segment is all or nothing); with
//! `N` at least the body, the request is handled and only the answer is lost (a retried
//! APPEND replaces the segment, a retried FINALIZE answers as the first did). `persist:N`
//! on an APPEND keeps only the first `N` bytes of its segment while answering success, so
//! FINALIZE finds the segments short (`400`). `status:429` carries `x-rate-limit-reset`
//! (epoch seconds: now plus the `Retry-After` seconds) besides `Retry-After` and `Date`
//! (M5); injected errors have the API's shape (v1.1 `errors`, v2 RFC 7807). `expire`
//! expires the media id: it answers `400` from then on (M5).
//!
//! ## tus (U1–U15)
//!
//! `drop-after:N` on a PATCH keeps the bytes that arrived (any count; none when the PATCH
//! carried `Upload-Checksum`); `persist:N` keeps only `N` bytes of a PATCH body and answers
//! so; `lie[:N]` makes a HEAD or PATCH answer claim `N` more bytes than held; `no-range`
//! leaves `Upload-Offset` out of a HEAD or PATCH answer; `expire` expires the upload (`410`
//! from then on). See [`crate::tus`].
//!
//! ## The resumable-upload draft (R1–R19)
//!
//! The same faults as tus, on `ietf.*` kinds: `drop-after:N` on a creation or append keeps
//! the bytes that arrived (never marking the upload complete); `persist:N` keeps only `N`
//! bytes of a body and answers so; `lie[:N]` makes a `HEAD` or append answer claim `N` more
//! bytes than held; `no-range` leaves `Upload-Offset` out of a `HEAD` or append answer;
//! `expire` expires the upload (`410` from then on). See [`crate::ietf`].
//!
//! # Examples
//!
//! ```
//! use resumable_server::FaultScript;
//!
//! // The second chunk is cut after 100000 bytes; the fourth is answered 503 twice.
//! let script = FaultScript::parse(
//!     "gcs.chunk#2=drop-after:100000; gcs.chunk#4=status:503x2,retry-after:1",
//! )
//! .unwrap();
//! assert_eq!(script.rules().len(), 2);
//!
//! // Every status query stalls 200 ms; chunks 1 to 3 persist only 256 KiB.
//! FaultScript::parse("gcs.query=stall:200ms\ngcs.chunk#1..3=persist:256k").unwrap();
//!
//! // Per request (header or query parameter): no selector.
//! let faults = FaultScript::parse_faults("status:429,retry-after:2").unwrap();
//! assert_eq!(faults.len(), 2);
//!
//! // TON: the second chunk is cut after 100000 bytes; every 308 says `bytes=0-N`.
//! FaultScript::parse("ton.chunk#2=drop-after:100000; ton.chunk=range-form:bytes").unwrap();
//!
//! // Media: FINALIZE starts processing that fails after two STATUS polls; the first APPEND
//! // is rate limited once (with x-rate-limit-reset); the third poll carries an error while
//! // in progress.
//! FaultScript::parse(
//!     "media.finalize=fail-processing:2; media.append#1=status:429,retry-after:0",
//! )
//! .unwrap();
//! FaultScript::parse("media.finalize=process:5; media.status#3=error-in-progress:0").unwrap();
//!
//! assert!(FaultScript::parse("gcs.chunk#0=expire").is_err());
//! assert!(FaultScript::parse("gcs.chunk=explode").is_err());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::ton::TonRangeForm;

/// The longest `stall` a spec may ask for.
pub const MAX_STALL_SPEC: Duration = Duration::from_secs(600);

/// The most STATUS polls a processing fault may ask for.
const MAX_PROCESSING_POLLS: u64 = 1000;

/// The kind of a request, as fault selectors name it.
///
/// Leaves are concrete kinds; [`RequestKind::Any`], [`RequestKind::Gcs`],
/// [`RequestKind::GcsPut`], [`RequestKind::Compliance`], [`RequestKind::Ton`] and
/// [`RequestKind::Media`], [`RequestKind::S3`], [`RequestKind::Tus`] and [`RequestKind::Ietf`]
/// are groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// `*`: any request.
    Any,
    /// `gcs`: any GCS request.
    Gcs,
    /// `gcs.start`: a start request (G1, G2).
    GcsStart,
    /// `gcs.put`: a chunk or a status query.
    GcsPut,
    /// `gcs.chunk`: a `PUT` carrying bytes (G4).
    GcsChunk,
    /// `gcs.query`: a `PUT` with `bytes */T` or `bytes */*` (G6).
    GcsQuery,
    /// `gcs.delete`: `DELETE` of a session (G10).
    GcsDelete,
    /// `gcs.other`: downloads, object metadata, simple uploads.
    GcsOther,
    /// `compliance`: any compliance request.
    Compliance,
    /// `compliance.create`: `POST /2/compliance/jobs` (C1).
    ComplianceCreate,
    /// `compliance.status`: `GET /2/compliance/jobs…` (C3).
    ComplianceStatus,
    /// `compliance.download`: `GET download_url` (C3).
    ComplianceDownload,
    /// `ton`: any TON request.
    Ton,
    /// `ton.single`: `POST /1.1/ton/bucket/{bucket}` with the whole file (T1).
    TonSingle,
    /// `ton.start`: `POST /1.1/ton/bucket/{bucket}?resumable=true` (T2).
    TonStart,
    /// `ton.chunk`: `PUT` of a chunk to the upload's location (T4).
    TonChunk,
    /// `ton.other`: `GET` of a stored object, and TON requests of no other kind.
    TonOther,
    /// `media`: any media request, v1.1 or v2.
    Media,
    /// `media.init`: INIT (M1) or `POST /2/media/upload/initialize` (M6).
    MediaInit,
    /// `media.append`: APPEND (M2) or `POST /2/media/upload/{id}/append` (M6).
    MediaAppend,
    /// `media.finalize`: FINALIZE (M3) or `POST /2/media/upload/{id}/finalize` (M6).
    MediaFinalize,
    /// `media.status`: `GET …?command=STATUS&media_id=ID` (M4, M6).
    MediaStatus,
    /// `media.other`: a media request whose command cannot be told before its body is read
    /// (chunked framing), or names no known command.
    MediaOther,
    /// `s3`: any S3 request.
    S3,
    /// `s3.create`: CreateMultipartUpload (S2).
    S3Create,
    /// `s3.part`: UploadPart (S3).
    S3Part,
    /// `s3.list`: ListParts (S5).
    S3List,
    /// `s3.complete`: CompleteMultipartUpload (S6).
    S3Complete,
    /// `s3.abort`: AbortMultipartUpload (S8).
    S3Abort,
    /// `s3.other`: HEAD, GET or PUT of an object, bucket requests.
    S3Other,
    /// `tus`: any tus request (a group).
    Tus,
    /// `tus.options`: `OPTIONS` discovery (U2).
    TusOptions,
    /// `tus.create`: `POST` to the creation URL (U6).
    TusCreate,
    /// `tus.head`: `HEAD` on an upload (U3).
    TusHead,
    /// `tus.patch`: `PATCH` on an upload (U4), also through `X-HTTP-Method-Override` (U5).
    TusPatch,
    /// `tus.delete`: `DELETE` of an upload (U12).
    TusDelete,
    /// `tus.other`: `GET` of an upload, and methods tus has no use for.
    TusOther,
    /// `ietf`: any request of the resumable-upload draft (a group).
    Ietf,
    /// `ietf.options`: `OPTIONS` on the creation URL (R12).
    IetfOptions,
    /// `ietf.create`: the creation request (R3).
    IetfCreate,
    /// `ietf.head`: `HEAD` on an upload resource (R7).
    IetfHead,
    /// `ietf.append`: `PATCH` on an upload resource (R9).
    IetfAppend,
    /// `ietf.delete`: `DELETE` of an upload resource (R13).
    IetfDelete,
    /// `ietf.other`: `GET` of an upload resource, and methods the draft has no use for.
    IetfOther,
    /// Requests no protocol claims (never matched by name, only by `*`).
    Other,
}

const KIND_NAMES: &[(&str, RequestKind)] = &[
    ("*", RequestKind::Any),
    ("gcs", RequestKind::Gcs),
    ("gcs.start", RequestKind::GcsStart),
    ("gcs.put", RequestKind::GcsPut),
    ("gcs.chunk", RequestKind::GcsChunk),
    ("gcs.query", RequestKind::GcsQuery),
    ("gcs.delete", RequestKind::GcsDelete),
    ("gcs.other", RequestKind::GcsOther),
    ("compliance", RequestKind::Compliance),
    ("compliance.create", RequestKind::ComplianceCreate),
    ("compliance.status", RequestKind::ComplianceStatus),
    ("compliance.download", RequestKind::ComplianceDownload),
    ("ton", RequestKind::Ton),
    ("ton.single", RequestKind::TonSingle),
    ("ton.start", RequestKind::TonStart),
    ("ton.chunk", RequestKind::TonChunk),
    ("ton.other", RequestKind::TonOther),
    ("media", RequestKind::Media),
    ("media.init", RequestKind::MediaInit),
    ("media.append", RequestKind::MediaAppend),
    ("media.finalize", RequestKind::MediaFinalize),
    ("media.status", RequestKind::MediaStatus),
    ("media.other", RequestKind::MediaOther),
    ("s3", RequestKind::S3),
    ("s3.create", RequestKind::S3Create),
    ("s3.part", RequestKind::S3Part),
    ("s3.list", RequestKind::S3List),
    ("s3.complete", RequestKind::S3Complete),
    ("s3.abort", RequestKind::S3Abort),
    ("s3.other", RequestKind::S3Other),
    ("tus", RequestKind::Tus),
    ("tus.options", RequestKind::TusOptions),
    ("tus.create", RequestKind::TusCreate),
    ("tus.head", RequestKind::TusHead),
    ("tus.patch", RequestKind::TusPatch),
    ("tus.delete", RequestKind::TusDelete),
    ("tus.other", RequestKind::TusOther),
    ("ietf", RequestKind::Ietf),
    ("ietf.options", RequestKind::IetfOptions),
    ("ietf.create", RequestKind::IetfCreate),
    ("ietf.head", RequestKind::IetfHead),
    ("ietf.append", RequestKind::IetfAppend),
    ("ietf.delete", RequestKind::IetfDelete),
    ("ietf.other", RequestKind::IetfOther),
];

impl RequestKind {
    /// The name used in scripts.
    pub fn name(self) -> &'static str {
        KIND_NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("other", |(n, _)| n)
    }

    /// The kinds a concrete request of this kind counts as: itself, its groups, and `*`.
    fn with_groups(self) -> &'static [RequestKind] {
        use RequestKind::*;
        match self {
            GcsStart => &[GcsStart, Gcs, Any],
            GcsChunk => &[GcsChunk, GcsPut, Gcs, Any],
            GcsQuery => &[GcsQuery, GcsPut, Gcs, Any],
            GcsDelete => &[GcsDelete, Gcs, Any],
            GcsOther => &[GcsOther, Gcs, Any],
            ComplianceCreate => &[ComplianceCreate, Compliance, Any],
            ComplianceStatus => &[ComplianceStatus, Compliance, Any],
            ComplianceDownload => &[ComplianceDownload, Compliance, Any],
            TonSingle => &[TonSingle, Ton, Any],
            TonStart => &[TonStart, Ton, Any],
            TonChunk => &[TonChunk, Ton, Any],
            TonOther => &[TonOther, Ton, Any],
            MediaInit => &[MediaInit, Media, Any],
            MediaAppend => &[MediaAppend, Media, Any],
            MediaFinalize => &[MediaFinalize, Media, Any],
            MediaStatus => &[MediaStatus, Media, Any],
            MediaOther => &[MediaOther, Media, Any],
            S3Create => &[S3Create, S3, Any],
            S3Part => &[S3Part, S3, Any],
            S3List => &[S3List, S3, Any],
            S3Complete => &[S3Complete, S3, Any],
            S3Abort => &[S3Abort, S3, Any],
            S3Other => &[S3Other, S3, Any],
            S3 => &[S3, Any],
            TusOptions => &[TusOptions, Tus, Any],
            TusCreate => &[TusCreate, Tus, Any],
            TusHead => &[TusHead, Tus, Any],
            TusPatch => &[TusPatch, Tus, Any],
            TusDelete => &[TusDelete, Tus, Any],
            TusOther => &[TusOther, Tus, Any],
            Tus => &[Tus, Any],
            IetfOptions => &[IetfOptions, Ietf, Any],
            IetfCreate => &[IetfCreate, Ietf, Any],
            IetfHead => &[IetfHead, Ietf, Any],
            IetfAppend => &[IetfAppend, Ietf, Any],
            IetfDelete => &[IetfDelete, Ietf, Any],
            IetfOther => &[IetfOther, Ietf, Any],
            Ietf => &[Ietf, Any],
            GcsPut => &[GcsPut, Gcs, Any],
            Gcs => &[Gcs, Any],
            Compliance => &[Compliance, Any],
            Ton => &[Ton, Any],
            Media => &[Media, Any],
            Any | Other => &[Any],
        }
    }
}

/// Which requests of a kind a rule selects, by 1-based ordinal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordinals {
    /// Every request (`#*`, or no `#`).
    All,
    /// The `first`-th up to the `last`-th (inclusive; `None`: no end).
    Range {
        /// The first selected ordinal (≥ 1).
        first: u64,
        /// The last selected ordinal, if any.
        last: Option<u64>,
    },
}

impl Ordinals {
    fn contains(self, n: u64) -> bool {
        match self {
            Ordinals::All => true,
            Ordinals::Range { first, last } => n >= first && last.is_none_or(|l| n <= l),
        }
    }
}

/// Which requests a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The kind of request.
    pub kind: RequestKind,
    /// Which of them, counted from 1.
    pub ordinals: Ordinals,
}

/// One fault. See the [module documentation](self) for each one's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `drop-after:N`: close the connection after `N` body bytes.
    DropAfter(u64),
    /// `persist:N`: store only the first `N` bytes of this request's body.
    Persist(u64),
    /// `status:CODE[xK]`: answer `code` to this and the next `times − 1` requests.
    Status {
        /// The status to answer.
        code: u16,
        /// How many requests in a row get it (≥ 1).
        times: u32,
    },
    /// `retry-after:S`: `Retry-After: S`.
    RetryAfter(u64),
    /// `retry-after-date:S`: `Retry-After` as an HTTP-date `S` seconds from now.
    RetryAfterDate(u64),
    /// `stall:D`: sleep before answering.
    Stall(Duration),
    /// `rate:R`: read the request body at most `R` bytes per second.
    Rate(u64),
    /// `truncate[:N]`: send a head claiming more body than sent, `N` body bytes, close.
    Truncate(u64),
    /// `expire`: expire the session first.
    Expire,
    /// `no-range`: a `308` without `Range`.
    NoRange,
    /// `no-proof`: a GCS completion without size or checksums.
    NoProof,
    /// `lie[:N]`: a `308` claiming `N` bytes more than stored.
    Lie(u64),
    /// `range-start:N`: a `308` whose `Range` starts at `N`.
    RangeStart(u64),
    /// `range-form:F`: a TON `308` whose `Range` is written in form `F` (T5).
    RangeForm(TonRangeForm),
    /// `process[:K]`: media processing that succeeds after `K` STATUS polls (M3, M4).
    Process(Option<u32>),
    /// `fail-processing[:K]`: media processing that ends `failed` with an `error` (M4).
    FailProcessing(Option<u32>),
    /// `error-in-progress[:K]`: media processing whose last answer is `in_progress` with an
    /// `error` (M4).
    ErrorInProgress(Option<u32>),
}

/// One rule of a script: a selector and the faults applied to what it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Which requests.
    pub selector: Selector,
    /// What happens to them.
    pub faults: Vec<Fault>,
}

/// A fault script (see the [module documentation](self) for the grammar). The default is
/// empty: no faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultScript {
    rules: Vec<Rule>,
}

/// Why a fault spec does not parse.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultSpecError {
    /// A rule without `=` between selector and faults.
    #[error("rule {rule:?}: expected SELECTOR=FAULTS")]
    MissingEquals {
        /// The rule's text.
        rule: String,
    },
    /// A selector naming no known kind of request.
    #[error(
        "unknown request kind {0:?} (known: *, gcs, gcs.start, gcs.put, gcs.chunk, gcs.query, gcs.delete, gcs.other, compliance, compliance.create, compliance.status, compliance.download, ton, ton.single, ton.start, ton.chunk, ton.other, media, media.init, media.append, media.finalize, media.status, media.other, s3, s3.create, s3.part, s3.list, s3.complete, s3.abort, s3.other, tus, tus.options, tus.create, tus.head, tus.patch, tus.delete, tus.other)"
    )]
    UnknownKind(String),
    /// Ordinals that are not `N`, `N..M`, `N..` or `*` with 1 ≤ N ≤ M.
    #[error("bad ordinals {0:?} (expected N, N..M, N.. or *, counting from 1)")]
    BadOrdinals(String),
    /// A fault name that does not exist.
    #[error(
        "unknown fault {0:?} (known: drop-after, persist, status, retry-after, retry-after-date, stall, truncate, expire, no-range, lie, range-start, range-form, process, fail-processing, error-in-progress)"
    )]
    UnknownFault(String),
    /// A fault that needs a value and has none.
    #[error("fault {0} needs a value ({0}:VALUE)")]
    MissingValue(&'static str),
    /// A fault that takes no value and has one.
    #[error("fault {0} takes no value")]
    UnexpectedValue(&'static str),
    /// A value out of range or not a number of the expected form.
    #[error("fault {fault}: bad value {value:?}: {expected}")]
    BadValue {
        /// The fault.
        fault: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An empty fault list.
    #[error("no faults given")]
    Empty,
}

impl FaultScript {
    /// Parses a script (see the grammar in the [module documentation](self)).
    ///
    /// # Errors
    /// A [`FaultSpecError`] naming the first problem found.
    pub fn parse(spec: &str) -> Result<FaultScript, FaultSpecError> {
        let mut rules = Vec::new();
        for text in spec.split([';', '\n']) {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let (selector, faults) =
                text.split_once('=')
                    .ok_or_else(|| FaultSpecError::MissingEquals {
                        rule: text.to_owned(),
                    })?;
            let selector = parse_selector(selector.trim())?;
            let faults = FaultScript::parse_faults(faults)?;
            rules.push(Rule { selector, faults });
        }
        Ok(FaultScript { rules })
    }

    /// Parses a per-request fault list (`fault,fault,…`), as given in the
    /// `x-resumable-fault` header or the `fault` query parameter.
    ///
    /// # Errors
    /// A [`FaultSpecError`] naming the first problem found.
    pub fn parse_faults(spec: &str) -> Result<Vec<Fault>, FaultSpecError> {
        let mut faults = Vec::new();
        for text in spec.split(',') {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            faults.push(parse_fault(text)?);
        }
        if faults.is_empty() {
            return Err(FaultSpecError::Empty);
        }
        Ok(faults)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Counts a request of `kind` in `state` and returns the faults the script selects for it.
    pub(crate) fn select(&self, state: &mut FaultState, kind: RequestKind) -> Vec<Fault> {
        let mut out = Vec::new();
        for k in kind.with_groups() {
            *state.counts.entry(*k).or_insert(0) += 1;
        }
        for rule in &self.rules {
            if !kind.with_groups().contains(&rule.selector.kind) {
                continue;
            }
            let n = state.counts.get(&rule.selector.kind).copied().unwrap_or(0);
            if rule.selector.ordinals.contains(n) {
                out.extend_from_slice(&rule.faults);
            }
        }
        out
    }
}

impl fmt::Display for FaultScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(rule.selector.kind.name())?;
            match rule.selector.ordinals {
                Ordinals::All => {}
                Ordinals::Range { first, last } if Some(first) == last => write!(f, "#{first}")?,
                Ordinals::Range { first, last } => {
                    write!(f, "#{first}..")?;
                    if let Some(l) = last {
                        write!(f, "{l}")?;
                    }
                }
            }
            f.write_str("=")?;
            for (j, fault) in rule.faults.iter().enumerate() {
                if j > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{fault}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::DropAfter(n) => write!(f, "drop-after:{n}"),
            Fault::Persist(n) => write!(f, "persist:{n}"),
            Fault::Status { code, times: 1 } => write!(f, "status:{code}"),
            Fault::Status { code, times } => write!(f, "status:{code}x{times}"),
            Fault::RetryAfter(s) => write!(f, "retry-after:{s}"),
            Fault::RetryAfterDate(s) => write!(f, "retry-after-date:{s}"),
            Fault::Stall(d) => write!(f, "stall:{}ms", d.as_millis()),
            Fault::Rate(r) => write!(f, "rate:{r}"),
            Fault::Truncate(n) => write!(f, "truncate:{n}"),
            Fault::Expire => f.write_str("expire"),
            Fault::NoRange => f.write_str("no-range"),
            Fault::NoProof => f.write_str("no-proof"),
            Fault::Lie(n) => write!(f, "lie:{n}"),
            Fault::RangeStart(n) => write!(f, "range-start:{n}"),
            Fault::RangeForm(form) => write!(f, "range-form:{form}"),
            Fault::Process(k) => write_polls(f, "process", k),
            Fault::FailProcessing(k) => write_polls(f, "fail-processing", k),
            Fault::ErrorInProgress(k) => write_polls(f, "error-in-progress", k),
        }
    }
}

fn write_polls(f: &mut fmt::Formatter<'_>, name: &str, polls: Option<u32>) -> fmt::Result {
    match polls {
        Some(k) => write!(f, "{name}:{k}"),
        None => f.write_str(name),
    }
}

fn parse_selector(text: &str) -> Result<Selector, FaultSpecError> {
    let (kind, ordinals) = match text.split_once('#') {
        Some((k, o)) => (k.trim(), Some(o.trim())),
        None => (text, None),
    };
    let kind = KIND_NAMES
        .iter()
        .find(|(n, _)| *n == kind)
        .map(|(_, k)| *k)
        .ok_or_else(|| FaultSpecError::UnknownKind(kind.to_owned()))?;
    let ordinals = match ordinals {
        None | Some("*") => Ordinals::All,
        Some(o) => parse_ordinals(o).ok_or_else(|| FaultSpecError::BadOrdinals(o.to_owned()))?,
    };
    Ok(Selector { kind, ordinals })
}

fn parse_ordinals(text: &str) -> Option<Ordinals> {
    let (first, last) = match text.split_once("..") {
        Some((a, "")) => (crate::http::parse_u64(a.trim())?, None),
        Some((a, b)) => (
            crate::http::parse_u64(a.trim())?,
            Some(crate::http::parse_u64(b.trim())?),
        ),
        None => {
            let n = crate::http::parse_u64(text)?;
            (n, Some(n))
        }
    };
    if first == 0 || last.is_some_and(|l| l < first) {
        return None;
    }
    Some(Ordinals::Range { first, last })
}

fn parse_fault(text: &str) -> Result<Fault, FaultSpecError> {
    let (name, value) = match text.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (text, None),
    };
    // Canonical names, so errors can borrow them statically.
    const NAMES: &[&str] = &[
        "drop-after",
        "persist",
        "status",
        "retry-after",
        "retry-after-date",
        "stall",
        "rate",
        "truncate",
        "expire",
        "no-range",
        "no-proof",
        "lie",
        "range-start",
        "range-form",
        "process",
        "fail-processing",
        "error-in-progress",
    ];
    let name: &'static str = NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .ok_or_else(|| FaultSpecError::UnknownFault(name.to_owned()))?;
    let need = || value.ok_or(FaultSpecError::MissingValue(name));
    let none = || match value {
        Some(_) => Err(FaultSpecError::UnexpectedValue(name)),
        None => Ok(()),
    };
    let bad = |value: &str, expected: &'static str| FaultSpecError::BadValue {
        fault: name,
        value: value.to_owned(),
        expected,
    };
    let size =
        |v: &str| parse_size(v).ok_or_else(|| bad(v, "a byte count like 100000, 256k or 8MiB"));
    let secs = |v: &str| {
        crate::http::parse_u64(v)
            .filter(|s| *s <= 86_400)
            .ok_or_else(|| bad(v, "whole seconds, at most 86400"))
    };
    Ok(match name {
        "drop-after" => Fault::DropAfter(size(need()?)?),
        "persist" => Fault::Persist(size(need()?)?),
        "status" => {
            let v = need()?;
            let (code, times) = match v.split_once(['x', 'X']) {
                Some((c, t)) => (c, Some(t)),
                None => (v, None),
            };
            let code = crate::http::parse_u64(code)
                .filter(|c| (200..=599).contains(c))
                .ok_or_else(|| bad(v, "a status from 200 to 599, optionally xK"))?
                as u16;
            let times = match times {
                None => 1,
                Some(t) => crate::http::parse_u64(t)
                    .filter(|t| (1..=1_000_000).contains(t))
                    .ok_or_else(|| bad(v, "a repeat count from 1 to 1000000 after x"))?
                    as u32,
            };
            Fault::Status { code, times }
        }
        "retry-after" => Fault::RetryAfter(secs(need()?)?),
        "retry-after-date" => Fault::RetryAfterDate(secs(need()?)?),
        "stall" => {
            let v = need()?;
            let d = parse_duration(v)
                .filter(|d| *d <= MAX_STALL_SPEC)
                .ok_or_else(|| bad(v, "a duration like 250ms or 2s, at most 600s"))?;
            Fault::Stall(d)
        }
        "rate" => {
            let v = need()?;
            let r = parse_size(v)
                .filter(|r| *r >= 1024)
                .ok_or_else(|| bad(v, "bytes per second like 512k or 8MiB, at least 1k"))?;
            Fault::Rate(r)
        }
        "truncate" => Fault::Truncate(match value {
            Some(v) => size(v)?,
            None => 0,
        }),
        "expire" => {
            none()?;
            Fault::Expire
        }
        "no-range" => {
            none()?;
            Fault::NoRange
        }
        "no-proof" => {
            none()?;
            Fault::NoProof
        }
        "lie" => Fault::Lie(match value {
            Some(v) => {
                let n = size(v)?;
                if n == 0 {
                    return Err(bad(v, "at least one byte"));
                }
                n
            }
            None => 262_144,
        }),
        "range-start" => {
            let v = need()?;
            let n = size(v)?;
            if n == 0 {
                return Err(bad(v, "at least 1 (a Range from 0 is the honest one)"));
            }
            Fault::RangeStart(n)
        }
        "range-form" => {
            let v = need()?;
            Fault::RangeForm(
                TonRangeForm::parse(v).ok_or_else(|| bad(v, "plain, bytes or length"))?,
            )
        }
        "process" | "fail-processing" | "error-in-progress" => {
            let polls = match value {
                None => None,
                Some(v) => Some(
                    crate::http::parse_u64(v)
                        .filter(|k| *k <= MAX_PROCESSING_POLLS)
                        .ok_or_else(|| bad(v, "a number of STATUS polls from 0 to 1000"))?
                        as u32,
                ),
            };
            match name {
                "process" => Fault::Process(polls),
                "fail-processing" => Fault::FailProcessing(polls),
                _ => Fault::ErrorInProgress(polls),
            }
        }
        _ => return Err(FaultSpecError::UnknownFault(name.to_owned())),
    })
}

/// `123`, `256k`, `256KiB`, `8m`, `8MiB`, `1g`, `1GiB` (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n = crate::http::parse_u64(digits)?;
    let mul: u64 = match unit {
        "" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// `250ms`, `2s`, or bare milliseconds.
fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return crate::http::parse_u64(ms).map(Duration::from_millis);
    }
    if let Some(s) = text.strip_suffix('s') {
        return crate::http::parse_u64(s)
            .filter(|s| *s <= 86_400)
            .map(Duration::from_secs);
    }
    crate::http::parse_u64(text).map(Duration::from_millis)
}

/// Per-scope fault state: how many requests of each kind were seen, and a repeating status
/// still owed (`status:CODEx K`).
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    counts: HashMap<RequestKind, u64>,
    /// The faults to repeat (a status and its `Retry-After`) and how many more times.
    repeat: Option<(Vec<Fault>, u32)>,
}

impl FaultState {
    /// Given the faults freshly selected in this scope, returns the repeated faults still
    /// owed (when the fresh ones carry no status of their own), and arms a new repeat when
    /// they carry `status:CODExK` with K > 1.
    pub(crate) fn repeat(&mut self, fresh: &[Fault]) -> Vec<Fault> {
        let times = fresh.iter().rev().find_map(|f| match f {
            Fault::Status { times, .. } => Some(*times),
            _ => None,
        });
        let Some(times) = times else {
            let Some((repeat, left)) = &mut self.repeat else {
                return Vec::new();
            };
            let out = repeat.clone();
            *left -= 1;
            if *left == 0 {
                self.repeat = None;
            }
            return out;
        };
        self.repeat = None;
        if times > 1 {
            let carried: Vec<Fault> = fresh
                .iter()
                .filter(|f| {
                    matches!(
                        f,
                        Fault::Status { .. } | Fault::RetryAfter(_) | Fault::RetryAfterDate(_)
                    )
                })
                .map(|f| match *f {
                    Fault::Status { code, .. } => Fault::Status { code, times: 1 },
                    other => other,
                })
                .collect();
            self.repeat = Some((carried, times - 1));
        }
        Vec::new()
    }
}

/// The faults in force for one request, merged (later wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FaultSet {
    pub(crate) drop_after: Option<u64>,
    pub(crate) persist: Option<u64>,
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<RetryAfter>,
    pub(crate) stall: Option<Duration>,
    pub(crate) rate: Option<u64>,
    pub(crate) truncate: Option<u64>,
    pub(crate) expire: bool,
    pub(crate) no_range: bool,
    pub(crate) no_proof: bool,
    pub(crate) lie: Option<u64>,
    pub(crate) range_start: Option<u64>,
    pub(crate) range_form: Option<TonRangeForm>,
    pub(crate) processing: Option<ProcessingFault>,
    /// The faults, for the request log.
    pub(crate) text: String,
}

/// How a processing fault ends media processing (M4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcessingEnd {
    /// `state: succeeded`.
    Succeeded,
    /// `state: failed` with an `error`.
    Failed,
    /// `state: in_progress` with an `error`.
    ErrorInProgress,
}

/// A processing fault: how processing ends, and after how many more polls (`None`: as
/// planned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessingFault {
    pub(crate) end: ProcessingEnd,
    pub(crate) polls: Option<u32>,
}

/// A `Retry-After` to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    Seconds(u64),
    Date(u64),
}

impl FaultSet {
    pub(crate) fn from_faults(faults: &[Fault]) -> Self {
        let mut set = FaultSet::default();
        for fault in faults {
            match *fault {
                Fault::DropAfter(n) => set.drop_after = Some(n),
                Fault::Persist(n) => set.persist = Some(n),
                Fault::Status { code, .. } => set.status = Some(code),
                Fault::RetryAfter(s) => set.retry_after = Some(RetryAfter::Seconds(s)),
                Fault::RetryAfterDate(s) => set.retry_after = Some(RetryAfter::Date(s)),
                Fault::Stall(d) => set.stall = Some(d),
                Fault::Rate(r) => set.rate = Some(r),
                Fault::Truncate(n) => set.truncate = Some(n),
                Fault::Expire => set.expire = true,
                Fault::NoRange => set.no_range = true,
                Fault::NoProof => set.no_proof = true,
                Fault::Lie(n) => set.lie = Some(n),
                Fault::RangeStart(n) => set.range_start = Some(n),
                Fault::RangeForm(form) => set.range_form = Some(form),
                Fault::Process(polls) => {
                    set.processing = Some(ProcessingFault {
                        end: ProcessingEnd::Succeeded,
                        polls,
                    })
                }
                Fault::FailProcessing(polls) => {
                    set.processing = Some(ProcessingFault {
                        end: ProcessingEnd::Failed,
                        polls,
                    })
                }
                Fault::ErrorInProgress(polls) => {
                    set.processing = Some(ProcessingFault {
                        end: ProcessingEnd::ErrorInProgress,
                        polls,
                    })
                }
            }
        }
        set.text = faults
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(",");
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let s = FaultScript::parse(
            "gcs.chunk#2=drop-after:100000; gcs.chunk#4=status:503x2,retry-after:1",
        )
        .unwrap();
        assert_eq!(
            s.rules()[0],
            Rule {
                selector: Selector {
                    kind: RequestKind::GcsChunk,
                    ordinals: Ordinals::Range {
                        first: 2,
                        last: Some(2)
                    }
                },
                faults: vec![Fault::DropAfter(100_000)]
            }
        );
        assert_eq!(
            s.rules()[1].faults,
            vec![
                Fault::Status {
                    code: 503,
                    times: 2
                },
                Fault::RetryAfter(1)
            ]
        );
        let s = FaultScript::parse(
            " gcs.query = stall:200ms \n gcs.chunk#1..3=persist:256k ;; *#5..=truncate ; gcs#*=lie",
        )
        .unwrap();
        assert_eq!(s.rules().len(), 4);
        assert_eq!(
            s.rules()[0].faults,
            vec![Fault::Stall(Duration::from_millis(200))]
        );
        assert_eq!(s.rules()[1].faults, vec![Fault::Persist(262_144)]);
        assert_eq!(
            s.rules()[2].selector.ordinals,
            Ordinals::Range {
                first: 5,
                last: None
            }
        );
        assert_eq!(s.rules()[3].faults, vec![Fault::Lie(262_144)]);
        // Display round-trips.
        assert_eq!(FaultScript::parse(&s.to_string()).unwrap(), s);
        assert!(FaultScript::parse("").unwrap().is_empty());
    }

    #[test]
    fn every_fault_parses() {
        let all = "drop-after:1m,persist:8MiB,status:429,retry-after:3,retry-after-date:4,\
                   stall:2s,truncate:10,expire,no-range,lie:5,range-start:7,status:500X3,stall:15,\
                   range-form:bytes,process,process:0,fail-processing:2,error-in-progress,rate:512k";
        let f = FaultScript::parse_faults(all).unwrap();
        assert_eq!(f.len(), 19);
        assert_eq!(f[18], Fault::Rate(512 << 10));
        assert_eq!(f[13], Fault::RangeForm(TonRangeForm::Bytes));
        assert_eq!(f[14], Fault::Process(None));
        assert_eq!(f[15], Fault::Process(Some(0)));
        assert_eq!(f[16], Fault::FailProcessing(Some(2)));
        assert_eq!(f[17], Fault::ErrorInProgress(None));
        // Display round-trips.
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert_eq!(FaultScript::parse_faults(&text.join(",")).unwrap(), f);
        assert_eq!(f[0], Fault::DropAfter(1 << 20));
        assert_eq!(f[1], Fault::Persist(8 << 20));
        assert_eq!(f[5], Fault::Stall(Duration::from_secs(2)));
        assert_eq!(
            f[11],
            Fault::Status {
                code: 500,
                times: 3
            }
        );
        assert_eq!(f[12], Fault::Stall(Duration::from_millis(15)));
    }

    #[test]
    fn errors_are_typed() {
        use FaultSpecError::*;
        type Check = fn(&FaultSpecError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("gcs.chunk", |e| matches!(e, MissingEquals { .. })),
            ("gcs.nope=expire", |e| matches!(e, UnknownKind(_))),
            ("gcs.chunk#0=expire", |e| matches!(e, BadOrdinals(_))),
            ("gcs.chunk#3..2=expire", |e| matches!(e, BadOrdinals(_))),
            ("gcs.chunk#x=expire", |e| matches!(e, BadOrdinals(_))),
            ("gcs.chunk=explode", |e| matches!(e, UnknownFault(_))),
            ("*=rate:100", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=persist", |e| {
                matches!(e, MissingValue("persist"))
            }),
            ("gcs.chunk=expire:3", |e| {
                matches!(e, UnexpectedValue("expire"))
            }),
            ("gcs.chunk=status:99", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=status:503x0", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=drop-after:-1", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=drop-after:1t", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=stall:3h", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=stall:601s", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=lie:0", |e| matches!(e, BadValue { .. })),
            ("gcs.chunk=drop-after:99999999999999999999g", |e| {
                matches!(e, BadValue { .. })
            }),
            ("gcs.chunk= , ", |e| matches!(e, Empty)),
            ("ton.chunk=range-form:weird", |e| {
                matches!(e, BadValue { .. })
            }),
            ("ton.chunk=range-form", |e| {
                matches!(e, MissingValue("range-form"))
            }),
            ("media.finalize=process:1001", |e| {
                matches!(e, BadValue { .. })
            }),
            ("media.finalize=fail-processing:x", |e| {
                matches!(e, BadValue { .. })
            }),
            ("media.nope=process", |e| matches!(e, UnknownKind(_))),
        ];
        for (spec, check) in cases {
            let err = FaultScript::parse(spec).unwrap_err();
            assert!(check(&err), "{spec}: {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn selection_counts_per_kind_and_repeats() {
        let s = FaultScript::parse("gcs.chunk#2=status:503x3; gcs.put#1=stall:1ms").unwrap();
        let mut st = FaultState::default();
        let mut pick = |kind| {
            let f = s.select(&mut st, kind);
            let mut all = st.repeat(&f);
            all.extend(f);
            all
        };
        // put#1 (a chunk, chunk#1): stall only.
        assert_eq!(
            pick(RequestKind::GcsChunk),
            vec![Fault::Stall(Duration::from_millis(1))]
        );
        // chunk#2: 503, repeated for the next two requests of any kind.
        let code = |f: &[Fault]| {
            f.iter().find_map(|f| match f {
                Fault::Status { code, .. } => Some(*code),
                _ => None,
            })
        };
        assert_eq!(code(&pick(RequestKind::GcsChunk)), Some(503));
        assert_eq!(code(&pick(RequestKind::GcsQuery)), Some(503));
        assert_eq!(code(&pick(RequestKind::GcsStart)), Some(503));
        assert_eq!(code(&pick(RequestKind::GcsQuery)), None);
    }

    #[test]
    fn ton_and_media_kinds_count_in_their_groups() {
        let s = FaultScript::parse("ton#2=expire; media.append#1=stall:1ms; media#3=status:429")
            .unwrap();
        let mut st = FaultState::default();
        let mut pick = |kind| s.select(&mut st, kind);
        assert!(pick(RequestKind::TonStart).is_empty());
        assert_eq!(pick(RequestKind::TonChunk), vec![Fault::Expire]);
        assert!(pick(RequestKind::MediaInit).is_empty());
        assert_eq!(
            pick(RequestKind::MediaAppend),
            vec![Fault::Stall(Duration::from_millis(1))]
        );
        assert_eq!(
            pick(RequestKind::MediaOther),
            vec![Fault::Status {
                code: 429,
                times: 1
            }]
        );
        for (name, kind) in KIND_NAMES {
            assert_eq!(kind.name(), *name);
        }
        assert_eq!(
            s.to_string(),
            "ton#2=expire; media.append#1=stall:1ms; media#3=status:429"
        );
    }
}
