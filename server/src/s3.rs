//! The server side of S3 multipart uploads (S1–S9 in `docs/protocols/s3.md`), path-style
//! below `/s3`: the endpoint is `BASE/s3`, an object `BASE/s3/{bucket}/{key}`.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /s3/{bucket}`, `HEAD /s3/{bucket}` | `200` (every bucket exists) |
//! | `POST …/{key}?uploads` | `200` `InitiateMultipartUploadResult` with a fresh upload ID; `x-amz-checksum-algorithm` and `x-amz-checksum-type` are kept and echoed (S2) |
//! | `PUT …?partNumber=N&uploadId=ID` | `200` with `ETag: "<md5>"` and the part's `x-amz-checksum-crc32c`; a part number outside 1–10,000 is `400 InvalidArgument`; a sent `x-amz-checksum-crc32c` that differs from the bytes' is `400 BadDigest` and stores nothing; N again replaces the part (S3) |
//! | `GET …?uploadId=ID[&max-parts=M][&part-number-marker=K]` | `ListPartsResult`, at most min(M, [`ServerConfig::s3_list_page_size`](crate::ServerConfig::s3_list_page_size)) parts above K, with `Size`, `ETag`, `ChecksumCRC32C`, `IsTruncated` and `NextPartNumberMarker` (S5) |
//! | `POST …?uploadId=ID` + XML | the listed parts joined: `CompleteMultipartUploadResult` with the ETag (`md5 of md5s-N`), `ChecksumCRC32C` (`FULL_OBJECT`, or `COMPOSITE` `base64-N` when the upload asked for it) and `ChecksumType`; errors `MalformedXML`, `InvalidPartOrder`, `InvalidPart`, `EntityTooSmall` (below [`ServerConfig::s3_min_part_size`](crate::ServerConfig::s3_min_part_size)), `InvalidRequest` (a wrong `x-amz-mp-object-size`), `BadDigest` (a wrong object `x-amz-checksum-crc32c`) (S6). A repeated Complete answers as the first did, or `404 NoSuchUpload` with [`ServerConfig::s3_repeat_complete_gone`](crate::ServerConfig::s3_repeat_complete_gone) (MinIO, S7) |
//! | `DELETE …?uploadId=ID` | `204`; unknown: `404 NoSuchUpload` (S8) |
//! | `HEAD …/{key}` | `200` with `Content-Length`, `ETag`, and with `x-amz-checksum-mode: ENABLED` the object's `x-amz-checksum-crc32c` and `x-amz-checksum-type`; `404` without a body |
//! | `GET …/{key}` | the object's bytes |
//! | `PUT …/{key}` | a single-request upload (`200` + `ETag`) |
//!
//! An unknown upload ID is `404 NoSuchUpload` everywhere. Errors are S3's `<Error>` documents
//! (S9). The XML is read with quick-xml and written here, not with the core's module (the
//! server checks the core independently). Signatures are not checked.
//!
//! Faults (`s3.create`, `s3.part`, `s3.list`, `s3.complete`, `s3.abort`, `s3.other`, and `s3`
//! for all): `status:503` answers `SlowDown`, `status:500` `InternalError` (S9, S10);
//! `drop-after:N` on a part cut short stores nothing, and with `N` at least the body (for
//! example `s3.complete=drop-after:1m`) the request is handled and its answer lost — a lost
//! Complete answer (S7); `persist:N` stores only the first `N` bytes of a part while
//! answering success (with their ETag and CRC32C: a lying server); `no-proof` leaves the
//! object's checksum out of Complete's answer and of HEAD.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest as _, Md5};

use crate::blob::Blob;
use crate::fault::RequestKind;
use crate::http::{BodyState, Request, Response, percent_decode};
use crate::server::{Ctx, Outcome};

/// Where S3 paths start: the endpoint is `BASE/s3`.
pub(crate) const PREFIX: &str = "/s3/";

/// The largest part accepted (S4: 5 GiB).
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// The largest Complete body read.
const MAX_COMPLETE_BODY: usize = 4 * 1024 * 1024;

/// One stored part.
struct Part {
    data: Blob,
    etag: String,
    md5: [u8; 16],
    crc32c: u32,
}

/// One open multipart upload.
struct Upload {
    bucket: String,
    key: String,
    content_type: Option<String>,
    algorithm: Option<String>,
    checksum_type: Option<String>,
    parts: BTreeMap<u32, Part>,
}

/// A stored object.
#[derive(Debug, Clone)]
struct Object {
    data: Arc<Vec<u8>>,
    etag: String,
    content_type: String,
    crc32c: u32,
    /// `COMPOSITE` value (`base64-N`) when the upload asked for that type.
    composite: Option<String>,
}

/// What a completed upload answered, for a repeated Complete.
#[derive(Debug, Clone)]
struct Completed {
    bucket: String,
    key: String,
}

#[derive(Default)]
struct State {
    next_id: u64,
    uploads: HashMap<String, Upload>,
    completed: HashMap<String, Completed>,
    objects: HashMap<(String, String), Object>,
}

/// Every S3 upload and object of a server.
#[derive(Default)]
pub(crate) struct S3Store {
    state: Mutex<State>,
}

impl S3Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stored object's bytes.
    pub(crate) fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        let object = st.objects.get(&(bucket.to_owned(), key.to_owned()))?;
        Some(object.data.as_ref().clone())
    }

    /// The part numbers an open upload holds.
    pub(crate) fn parts(&self, upload_id: &str) -> Option<Vec<u32>> {
        let st = self.lock();
        Some(st.uploads.get(upload_id)?.parts.keys().copied().collect())
    }

    /// The IDs of the open uploads.
    pub(crate) fn uploads(&self) -> Vec<String> {
        self.lock().uploads.keys().cloned().collect()
    }
}

/// What an S3 request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum S3Route {
    Bucket,
    Create(String, String),
    Part(String, String, String, Option<u32>),
    List(String, String, String),
    Complete(String, String, String),
    Abort(String, String, String),
    Head(String, String),
    Get(String, String),
    Put(String, String),
    NotAllowed,
}

impl S3Route {
    /// The fault kind of the request.
    pub(crate) fn kind(&self) -> RequestKind {
        match self {
            S3Route::Create(..) => RequestKind::S3Create,
            S3Route::Part(..) => RequestKind::S3Part,
            S3Route::List(..) => RequestKind::S3List,
            S3Route::Complete(..) => RequestKind::S3Complete,
            S3Route::Abort(..) => RequestKind::S3Abort,
            _ => RequestKind::S3Other,
        }
    }
}

/// The route of a request below [`PREFIX`], or `None` for other paths.
pub(crate) fn route(req: &Request) -> Option<S3Route> {
    let rest = req.path.strip_prefix(PREFIX)?;
    let (bucket, key) = match rest.split_once('/') {
        Some((b, k)) if !k.is_empty() => (b, Some(k)),
        Some((b, _)) => (b, None),
        None => (rest, None),
    };
    let bucket = percent_decode(bucket, false)?;
    if bucket.is_empty() {
        return Some(S3Route::NotAllowed);
    }
    let Some(key) = key else {
        return Some(match req.method.as_str() {
            "PUT" | "HEAD" => S3Route::Bucket,
            _ => S3Route::NotAllowed,
        });
    };
    let key = percent_decode(key, false)?;
    let has = |name: &str| req.query.iter().any(|(k, _)| k == name);
    let id = req.query_param("uploadId").map(str::to_owned);
    Some(match (req.method.as_str(), id) {
        ("POST", None) if has("uploads") => S3Route::Create(bucket, key),
        ("PUT", Some(id)) => {
            let n = req
                .query_param("partNumber")
                .and_then(crate::parse::decimal)
                .and_then(|n| u32::try_from(n).ok());
            S3Route::Part(bucket, key, id, n)
        }
        ("GET", Some(id)) => S3Route::List(bucket, key, id),
        ("POST", Some(id)) => S3Route::Complete(bucket, key, id),
        ("DELETE", Some(id)) => S3Route::Abort(bucket, key, id),
        ("HEAD", None) => S3Route::Head(bucket, key),
        ("GET", None) => S3Route::Get(bucket, key),
        ("PUT", None) => S3Route::Put(bucket, key),
        _ => S3Route::NotAllowed,
    })
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// An S3 `<Error>` document (S9).
pub(crate) fn error(status: u16, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>resumable-server</RequestId></Error>",
        escape(code),
        escape(message)
    );
    Response::new(status)
        .header("x-amz-request-id", "resumable-server")
        .body("application/xml", body.into_bytes())
}

/// The answer standing in for a request by the `status` fault: S3's code for it.
pub(crate) fn injected(code: u16, message: &str) -> Response {
    let name = match code {
        503 => "SlowDown",
        500 => "InternalError",
        400 => "InvalidRequest",
        403 => "AccessDenied",
        404 => "NoSuchUpload",
        _ => "InjectedFault",
    };
    error(code, name, message)
}

fn xml(body: String) -> Response {
    Response::new(200).body(
        "application/xml",
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}").into_bytes(),
    )
}

const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

fn b64(crc: u32) -> String {
    BASE64.encode(crc.to_be_bytes())
}

/// A CRC32C header value: base64 of exactly four bytes, padded.
fn parse_crc(text: &str) -> Option<u32> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    let raw: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(raw))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Handles an S3 request.
pub(crate) fn handle(ctx: &mut Ctx<'_>, route: &S3Route) -> Outcome {
    let store = &ctx.shared.s3;
    match route {
        S3Route::Bucket => Outcome::Respond(Response::new(200)),
        S3Route::Create(bucket, key) => create(ctx, bucket, key),
        S3Route::Part(_, _, id, n) => part(ctx, id, *n),
        S3Route::List(_, _, id) => Outcome::Respond(list(ctx, id)),
        S3Route::Complete(bucket, key, id) => complete(ctx, bucket, key, id),
        S3Route::Abort(_, _, id) => Outcome::Respond(match store.lock().uploads.remove(id) {
            Some(_) => Response::new(204),
            None => error(404, "NoSuchUpload", "The specified upload does not exist."),
        }),
        S3Route::Head(bucket, key) => Outcome::Respond(head(ctx, bucket, key)),
        S3Route::Get(bucket, key) => {
            let st = store.lock();
            Outcome::Respond(match st.objects.get(&(bucket.clone(), key.clone())) {
                Some(o) => Response::new(200)
                    .header("ETag", o.etag.clone())
                    .body(&o.content_type, o.data.as_ref().clone()),
                None => error(404, "NoSuchKey", "The specified key does not exist."),
            })
        }
        S3Route::Put(bucket, key) => put(ctx, bucket, key),
        S3Route::NotAllowed => Outcome::Respond(error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        )),
    }
}

fn create(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Outcome {
    let algorithm = ctx
        .req
        .header("x-amz-checksum-algorithm")
        .map(str::to_owned);
    let checksum_type = ctx.req.header("x-amz-checksum-type").map(str::to_owned);
    if let Some(a) = &algorithm
        && !matches!(
            a.as_str(),
            "CRC32C" | "CRC32" | "SHA1" | "SHA256" | "CRC64NVME"
        )
    {
        return Outcome::Respond(error(400, "InvalidRequest", "Unknown checksum algorithm."));
    }
    if let Some(t) = &checksum_type
        && !matches!(t.as_str(), "COMPOSITE" | "FULL_OBJECT")
    {
        return Outcome::Respond(error(400, "InvalidRequest", "Unknown checksum type."));
    }
    let mut st = ctx.shared.s3.lock();
    st.next_id += 1;
    // Opaque and in need of encoding in a query, as real upload IDs are.
    let id = format!("mpu.{}+{}/{:016x}=", st.next_id, std::process::id(), {
        crate::util::unix_secs(std::time::SystemTime::now()) ^ st.next_id.rotate_left(17)
    });
    st.uploads.insert(
        id.clone(),
        Upload {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type: ctx.req.header("content-type").map(str::to_owned),
            algorithm: algorithm.clone(),
            checksum_type: checksum_type.clone(),
            parts: BTreeMap::new(),
        },
    );
    drop(st);
    ctx.upload_id = Some(id.clone());
    let mut r = xml(format!(
        "<InitiateMultipartUploadResult xmlns=\"{NS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        escape(bucket),
        escape(key),
        escape(&id)
    ));
    if let Some(a) = algorithm {
        r = r.header("x-amz-checksum-algorithm", a);
    }
    if let Some(t) = checksum_type {
        r = r.header("x-amz-checksum-type", t);
    }
    Outcome::Respond(r)
}

fn part(ctx: &mut Ctx<'_>, id: &str, number: Option<u32>) -> Outcome {
    ctx.upload_id = Some(id.to_owned());
    let Some(n) = number.filter(|n| (1..=10_000).contains(n)) else {
        return Outcome::Respond(error(
            400,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive.",
        ));
    };
    if !ctx.shared.s3.lock().uploads.contains_key(id) {
        return Outcome::Respond(error(
            404,
            "NoSuchUpload",
            "The specified upload does not exist.",
        ));
    }
    let Some(len) = ctx.req.content_length() else {
        return Outcome::Respond(error(
            411,
            "MissingContentLength",
            "Content-Length is required.",
        ));
    };
    if len > MAX_PART.min(ctx.shared.config.max_object_size) {
        return Outcome::Close(error(400, "EntityTooLarge", "The part is too large."));
    }
    let sent_crc = match ctx.req.header("x-amz-checksum-crc32c") {
        Some(v) => match parse_crc(v) {
            Some(c) => Some(c),
            None => {
                return Outcome::Respond(error(
                    400,
                    "InvalidRequest",
                    "Unreadable x-amz-checksum-crc32c.",
                ));
            }
        },
        None => None,
    };
    let mut data = Blob::default();
    ctx.body.read_into(&mut data, len);
    if ctx.body.state() != BodyState::Done {
        // A part cut short is not stored (S3).
        return Outcome::Drop;
    }
    let mut crc = 0u32;
    let mut md5 = Md5::new();
    data.for_each_slice(0..data.len(), |s| {
        crc = crc32c::crc32c_append(crc, s);
        md5.update(s);
    });
    if sent_crc.is_some_and(|c| c != crc) {
        return Outcome::Respond(error(
            400,
            "BadDigest",
            "The CRC32C you specified did not match the calculated checksum.",
        ));
    }
    // The persist fault: keep a prefix and answer as if it were the part (a lying server).
    if let Some(keep) = ctx.faults.persist.filter(|k| *k < data.len()) {
        data.truncate(keep);
        crc = 0;
        md5 = Md5::new();
        data.for_each_slice(0..keep, |s| {
            crc = crc32c::crc32c_append(crc, s);
            md5.update(s);
        });
    }
    let digest: [u8; 16] = md5.finalize().into();
    let etag = format!("\"{}\"", hex(&digest));
    let mut st = ctx.shared.s3.lock();
    let Some(upload) = st.uploads.get_mut(id) else {
        return Outcome::Respond(error(
            404,
            "NoSuchUpload",
            "The specified upload does not exist.",
        ));
    };
    upload.parts.insert(
        n,
        Part {
            data,
            etag: etag.clone(),
            md5: digest,
            crc32c: crc,
        },
    );
    Outcome::Respond(
        Response::new(200)
            .header("ETag", etag)
            .header("x-amz-checksum-crc32c", b64(crc)),
    )
}

fn list(ctx: &mut Ctx<'_>, id: &str) -> Response {
    ctx.upload_id = Some(id.to_owned());
    let max = match ctx.req.query_param("max-parts") {
        Some(v) => match crate::parse::decimal(v) {
            Some(n) => n.min(1000) as usize,
            None => return error(400, "InvalidArgument", "max-parts must be an integer."),
        },
        None => 1000,
    };
    let marker = match ctx.req.query_param("part-number-marker") {
        Some(v) => match crate::parse::decimal(v).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                return error(
                    400,
                    "InvalidArgument",
                    "part-number-marker must be an integer.",
                );
            }
        },
        None => 0,
    };
    let page_size = max.min(ctx.shared.config.s3_list_page_size.max(1) as usize);
    let st = ctx.shared.s3.lock();
    let Some(upload) = st.uploads.get(id) else {
        return error(404, "NoSuchUpload", "The specified upload does not exist.");
    };
    let after: Vec<(&u32, &Part)> = upload.parts.range(marker.saturating_add(1)..).collect();
    let page = &after[..after.len().min(page_size)];
    let truncated = after.len() > page.len();
    let mut out = format!(
        "<ListPartsResult xmlns=\"{NS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId><PartNumberMarker>{marker}</PartNumberMarker>",
        escape(&upload.bucket),
        escape(&upload.key),
        escape(id)
    );
    if let Some((last, _)) = page.last() {
        out.push_str(&format!(
            "<NextPartNumberMarker>{last}</NextPartNumberMarker>"
        ));
    }
    out.push_str(&format!(
        "<MaxParts>{page_size}</MaxParts><IsTruncated>{truncated}</IsTruncated>"
    ));
    if let Some(a) = &upload.algorithm {
        out.push_str(&format!(
            "<ChecksumAlgorithm>{}</ChecksumAlgorithm>",
            escape(a)
        ));
    }
    for (n, p) in page {
        out.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><LastModified>2026-12-02T00:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size><ChecksumCRC32C>{}</ChecksumCRC32C></Part>",
            escape(&p.etag),
            p.data.len(),
            b64(p.crc32c)
        ));
    }
    out.push_str("</ListPartsResult>");
    xml(out)
}

/// The `(part number, ETag, CRC32C)` entries of a Complete body, read strictly with
/// quick-xml: root `CompleteMultipartUpload`, `Part` children each with one `PartNumber` and
/// one `ETag`. `None` for anything else.
fn complete_parts(body: &[u8]) -> Option<Vec<(u32, String, Option<String>)>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut parts = Vec::new();
    let mut current: Option<(Option<u32>, Option<String>, Option<String>)> = None;
    let mut text = String::new();
    let mut saw_root = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = String::from_utf8(e.local_name().as_ref().to_vec()).ok()?;
                match (path.len(), name.as_str()) {
                    (0, "CompleteMultipartUpload") => saw_root = true,
                    (0, _) => return None,
                    (1, "Part") => current = Some((None, None, None)),
                    _ => {}
                }
                path.push(name);
                text.clear();
                if path.len() > 8 {
                    return None;
                }
            }
            Event::Empty(e)
                if path.is_empty() && e.local_name().as_ref() == b"CompleteMultipartUpload" =>
            {
                saw_root = true;
            }
            Event::Text(t) => text.push_str(&t.decode().ok()?),
            Event::CData(t) => text.push_str(std::str::from_utf8(&t).ok()?),
            Event::GeneralRef(r) => match r.resolve_char_ref().ok()? {
                Some(c) => text.push(c),
                None => text.push_str(match r.decode().ok()?.as_ref() {
                    "quot" => "\"",
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "apos" => "'",
                    _ => return None,
                }),
            },
            Event::End(_) => {
                let name = path.pop()?;
                if let (Some(part), 2) = (current.as_mut(), path.len()) {
                    let value = std::mem::take(&mut text);
                    match name.as_str() {
                        "PartNumber" if part.0.is_none() => {
                            let n = crate::parse::decimal(value.trim())?;
                            part.0 = Some(u32::try_from(n).ok()?);
                        }
                        "ETag" if part.1.is_none() => part.1 = Some(value),
                        "ChecksumCRC32C" => part.2 = Some(value),
                        "PartNumber" | "ETag" => return None,
                        _ => {}
                    }
                } else if path.len() == 1 && name == "Part" {
                    let (n, etag, crc) = current.take()?;
                    parts.push((n?, etag?, crc));
                }
                text.clear();
            }
            Event::DocType(_) => return None,
            Event::Eof => break,
            _ => {}
        }
    }
    (saw_root && path.is_empty()).then_some(parts)
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

fn complete(ctx: &mut Ctx<'_>, bucket: &str, key: &str, id: &str) -> Outcome {
    ctx.upload_id = Some(id.to_owned());
    let body = match ctx.body.read_small(MAX_COMPLETE_BODY) {
        Ok(body) => body,
        Err(true) => return Outcome::Close(error(400, "MalformedXML", "The body is too large.")),
        Err(false) => return Outcome::Drop,
    };
    let no_proof = ctx.faults.no_proof;
    let mut st = ctx.shared.s3.lock();
    if let Some(done) = st.completed.get(id).cloned() {
        if ctx.shared.config.s3_repeat_complete_gone {
            return Outcome::Respond(error(
                404,
                "NoSuchUpload",
                "The specified upload does not exist.",
            ));
        }
        let object = st
            .objects
            .get(&(done.bucket.clone(), done.key.clone()))
            .cloned();
        return Outcome::Respond(match object {
            Some(o) => complete_result(&done.bucket, &done.key, &o, no_proof),
            None => error(404, "NoSuchUpload", "The specified upload does not exist."),
        });
    }
    let Some(upload) = st.uploads.get(id) else {
        return Outcome::Respond(error(
            404,
            "NoSuchUpload",
            "The specified upload does not exist.",
        ));
    };
    let Some(listed) = complete_parts(&body) else {
        return Outcome::Respond(error(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed.",
        ));
    };
    if listed.is_empty() {
        return Outcome::Respond(error(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed.",
        ));
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Outcome::Respond(error(
            400,
            "InvalidPartOrder",
            "The list of parts was not in ascending order.",
        ));
    }
    let min = ctx.shared.config.s3_min_part_size;
    let mut md5s = Vec::with_capacity(listed.len() * 16);
    let mut chosen: Vec<&Part> = Vec::with_capacity(listed.len());
    for (i, (n, etag, crc)) in listed.iter().enumerate() {
        let Some(p) = upload
            .parts
            .get(n)
            .filter(|p| unquote(&p.etag) == unquote(etag))
        else {
            return Outcome::Respond(error(
                400,
                "InvalidPart",
                "One or more of the specified parts could not be found.",
            ));
        };
        if crc
            .as_deref()
            .is_some_and(|c| parse_crc(c) != Some(p.crc32c))
        {
            return Outcome::Respond(error(
                400,
                "InvalidPart",
                "A part's checksum does not match.",
            ));
        }
        if i + 1 < listed.len() && p.data.len() < min {
            return Outcome::Respond(error(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        md5s.extend_from_slice(&p.md5);
        chosen.push(p);
    }
    let total: u64 = chosen.iter().map(|p| p.data.len()).sum();
    if let Some(v) = ctx.req.header("x-amz-mp-object-size")
        && crate::parse::decimal(v) != Some(total)
    {
        return Outcome::Respond(error(
            400,
            "InvalidRequest",
            "The provided x-amz-mp-object-size does not match the object's size.",
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for p in &chosen {
        p.data
            .for_each_slice(0..p.data.len(), |s| data.extend_from_slice(s));
    }
    let crc = crc32c::crc32c(&data);
    if let Some(v) = ctx.req.header("x-amz-checksum-crc32c")
        && parse_crc(v) != Some(crc)
    {
        return Outcome::Respond(error(
            400,
            "BadDigest",
            "The CRC32C you specified did not match the calculated checksum.",
        ));
    }
    let composite = (upload.algorithm.as_deref() == Some("CRC32C")
        && upload.checksum_type.as_deref() != Some("FULL_OBJECT"))
    .then(|| {
        let raw = chosen.iter().fold(0u32, |acc, p| {
            crc32c::crc32c_append(acc, &p.crc32c.to_be_bytes())
        });
        format!("{}-{}", b64(raw), chosen.len())
    });
    let object = Object {
        data: Arc::new(data),
        etag: format!("\"{}-{}\"", hex(&Md5::digest(&md5s)), chosen.len()),
        content_type: upload
            .content_type
            .clone()
            .unwrap_or_else(|| "binary/octet-stream".into()),
        crc32c: crc,
        composite,
    };
    st.uploads.remove(id);
    st.completed.insert(
        id.to_owned(),
        Completed {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
    );
    st.objects
        .insert((bucket.to_owned(), key.to_owned()), object.clone());
    Outcome::Respond(complete_result(bucket, key, &object, no_proof))
}

fn checksum_of(o: &Object) -> (String, &'static str) {
    match &o.composite {
        Some(c) => (c.clone(), "COMPOSITE"),
        None => (b64(o.crc32c), "FULL_OBJECT"),
    }
}

fn complete_result(bucket: &str, key: &str, o: &Object, no_proof: bool) -> Response {
    let checksum = if no_proof {
        String::new()
    } else {
        let (value, kind) = checksum_of(o);
        format!("<ChecksumCRC32C>{value}</ChecksumCRC32C><ChecksumType>{kind}</ChecksumType>")
    };
    xml(format!(
        "<CompleteMultipartUploadResult xmlns=\"{NS}\"><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag>{checksum}</CompleteMultipartUploadResult>",
        escape(bucket),
        escape(key),
        escape(bucket),
        escape(key),
        escape(&o.etag)
    ))
}

fn head(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Response {
    let st = ctx.shared.s3.lock();
    let Some(o) = st.objects.get(&(bucket.to_owned(), key.to_owned())) else {
        return Response::new(404).header("Content-Length", "0");
    };
    let mut r = Response::new(200)
        .header("Content-Length", o.data.len().to_string())
        .header("ETag", o.etag.clone())
        .header("Content-Type", o.content_type.clone());
    if ctx.req.header("x-amz-checksum-mode") == Some("ENABLED") && !ctx.faults.no_proof {
        let (value, kind) = checksum_of(o);
        r = r
            .header("x-amz-checksum-crc32c", value)
            .header("x-amz-checksum-type", kind);
    }
    r
}

fn put(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Outcome {
    let Some(len) = ctx.req.content_length() else {
        return Outcome::Respond(error(
            411,
            "MissingContentLength",
            "Content-Length is required.",
        ));
    };
    if len > MAX_PART.min(ctx.shared.config.max_object_size) {
        return Outcome::Close(error(400, "EntityTooLarge", "The object is too large."));
    }
    let mut blob = Blob::default();
    ctx.body.read_into(&mut blob, len);
    if ctx.body.state() != BodyState::Done {
        return Outcome::Drop;
    }
    let data = blob.to_vec();
    let crc = crc32c::crc32c(&data);
    if let Some(v) = ctx.req.header("x-amz-checksum-crc32c")
        && parse_crc(v) != Some(crc)
    {
        return Outcome::Respond(error(
            400,
            "BadDigest",
            "The CRC32C you specified did not match the calculated checksum.",
        ));
    }
    let etag = format!("\"{}\"", hex(&Md5::digest(&data)));
    let object = Object {
        data: Arc::new(data),
        etag: etag.clone(),
        content_type: ctx
            .req
            .header("content-type")
            .unwrap_or("binary/octet-stream")
            .to_owned(),
        crc32c: crc,
        composite: None,
    };
    ctx.shared
        .s3
        .lock()
        .objects
        .insert((bucket.to_owned(), key.to_owned()), object);
    Outcome::Respond(Response::new(200).header("ETag", etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s6_complete_bodies_are_read_strictly() {
        let ok = br#"<?xml version="1.0"?><CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag></Part><Part><ETag>"b"</ETag><PartNumber>2</PartNumber><ChecksumCRC32C>AAAAAA==</ChecksumCRC32C></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            complete_parts(ok),
            Some(vec![
                (1, "\"a\"".into(), None),
                (2, "\"b\"".into(), Some("AAAAAA==".into()))
            ])
        );
        for bad in [
            &b"<Other/>"[..],
            b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><ETag>e</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part>",
            b"not xml",
        ] {
            assert_eq!(complete_parts(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            complete_parts(b"<CompleteMultipartUpload></CompleteMultipartUpload>"),
            Some(vec![])
        );
    }

    #[test]
    fn s3_crc32c_headers_are_four_bytes_of_base64() {
        assert_eq!(parse_crc("AAAAAA=="), Some(0));
        assert_eq!(parse_crc("ipE2qg=="), Some(0x8a91_36aa));
        assert_eq!(parse_crc("ipE2"), None);
        assert_eq!(parse_crc("AAAAAAAA"), None);
    }
}
