//! The GCS JSON API around an upload: what Google's clients (the Python and Rust
//! libraries, `gcloud storage`) send besides the resumable session itself.
//!
//! | request | answer |
//! |---|---|
//! | `POST /storage/v1/b?project=P` `{"name": B}` | `200` bucket resource; `409` when it exists |
//! | `GET /storage/v1/b/B` | `200` bucket resource, `404` |
//! | `GET /storage/v1/b?project=P[&prefix=]` | `{"kind":"storage#buckets","items":[…]}` |
//! | `DELETE /storage/v1/b/B` | `204`; `409` when it holds objects |
//! | `GET /storage/v1/b/B/o/O` | `200` object resource (`size`, `crc32c`, `md5Hash`, `generation`, …) |
//! | `GET /storage/v1/b/B/o/O?alt=media`, `GET /download/storage/v1/b/B/o/O?alt=media` | the bytes; one `Range: bytes=…` gives `206` with `Content-Range`, past the end `416` |
//! | `GET /storage/v1/b/B/o[?prefix=&delimiter=&maxResults=&pageToken=&startOffset=&endOffset=&includeTrailingDelimiter=]` | `{"kind":"storage#objects","items":[…],"prefixes":[…],"nextPageToken"?}` |
//! | `DELETE /storage/v1/b/B/o/O` | `204` |
//! | `POST /upload/storage/v1/b/B/o?uploadType=media&name=O` | the body is the object: `200` resource |
//! | `POST …?uploadType=multipart` (`multipart/related`: JSON metadata, then the media) | `200` resource |
//! | `POST …?uploadType=resumable` | a session (G2, see [`crate::gcs`]) |
//!
//! Uploads are accepted at `/upload/storage/v1/…` and `/resumable/upload/storage/v1/…`
//! (`gcloud storage` uses the latter). Object names may be percent-encoded (`a%2Fb`) or not.
//!
//! Preconditions (`ifGenerationMatch`, `ifGenerationNotMatch`, `ifMetagenerationMatch`,
//! `ifMetagenerationNotMatch`) are honoured on object get, delete and every upload:
//! `ifGenerationMatch=0` means "only if no live object", so an upload of an existing name
//! is `412`. A resumable session checks them at its start and again when it completes. A
//! failed `…NotMatch` on a get is `304`.
//!
//! A multipart upload's metadata may carry `crc32c` and `md5Hash` (Google's clients send
//! them when asked to check): a mismatch with the bytes is `400` and nothing is stored.
//!
//! Buckets: an upload into a bucket never created works (this server's older clients never
//! create one) and makes the bucket known; `GET` of a bucket answers `200` once it was
//! created or holds an object, `404` before.
//!
//! Errors have Google's JSON shape:
//! `{"error":{"code":N,"message":"…","errors":[{"message":"…","domain":"global","reason":"…"}]}}`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::blob::Blob;
use crate::gcs::{self, GcsApi, ObjectMeta, StoredObject, error};
use crate::http::{BodyState, Request, Response, percent_decode, percent_encode};
use crate::parse::{self, ByteRange};
use crate::server::{Ctx, Outcome};
use crate::util;

/// The largest JSON body of a bucket insert.
const MAX_JSON: usize = 64 * 1024;
/// The most list entries in one answer.
const MAX_RESULTS: usize = 1000;

/// A JSON API request this module answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JsonRoute {
    /// `GET /storage/v1/b`.
    BucketList,
    /// `POST /storage/v1/b`.
    BucketInsert,
    /// `GET /storage/v1/b/B`.
    BucketGet(String),
    /// `DELETE /storage/v1/b/B`.
    BucketDelete(String),
    /// `GET /storage/v1/b/B/o`.
    ObjectList(String),
    /// `GET` of an object: its bytes (`media`) or its resource.
    ObjectGet {
        /// The bucket.
        bucket: String,
        /// The object name.
        name: String,
        /// The bytes rather than the resource.
        media: bool,
    },
    /// `DELETE /storage/v1/b/B/o/O`.
    ObjectDelete(String, String),
    /// `POST …/upload/storage/v1/b/B/o?uploadType=media|multipart`.
    Upload(String),
}

/// Where a JSON API path goes: `None` when it is not one of its paths, `Some(Err(…))` for a
/// resumable start (G2, handled by [`crate::gcs::start_json`]) or a method the path does
/// not take.
pub(crate) fn route(req: &Request) -> Option<Result<JsonRoute, Allowed>> {
    let m = req.method.as_str();
    let path = req.path.as_str();
    for prefix in ["/upload/storage/v1/b/", "/resumable/upload/storage/v1/b/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let bucket = rest.strip_suffix("/o").and_then(segment)?;
            if m != "POST" {
                return Some(Err(Allowed::Post));
            }
            return Some(Ok(match req.query_param("uploadType") {
                Some("resumable") => return Some(Err(Allowed::ResumableStart(bucket))),
                _ => JsonRoute::Upload(bucket),
            }));
        }
    }
    if let Some(rest) = path.strip_prefix("/download/storage/v1/b/") {
        let (bucket, name) = object_of(rest)?;
        return Some(match m {
            "GET" => Ok(JsonRoute::ObjectGet {
                bucket,
                name,
                media: true,
            }),
            _ => Err(Allowed::Get),
        });
    }
    if path == "/storage/v1/b" || path == "/storage/v1/b/" {
        return Some(match m {
            "GET" => Ok(JsonRoute::BucketList),
            "POST" => Ok(JsonRoute::BucketInsert),
            _ => Err(Allowed::Get),
        });
    }
    let rest = path.strip_prefix("/storage/v1/b/")?;
    if let Some(b) = rest.strip_suffix("/o").filter(|b| !b.contains('/')) {
        let bucket = segment(b)?;
        return Some(match m {
            "GET" => Ok(JsonRoute::ObjectList(bucket)),
            _ => Err(Allowed::Get),
        });
    }
    if !rest.contains('/') {
        let bucket = segment(rest)?;
        return Some(match m {
            "GET" => Ok(JsonRoute::BucketGet(bucket)),
            "DELETE" => Ok(JsonRoute::BucketDelete(bucket)),
            _ => Err(Allowed::Get),
        });
    }
    let (bucket, name) = object_of(rest)?;
    Some(match m {
        "GET" => Ok(JsonRoute::ObjectGet {
            bucket,
            name,
            media: req.query_param("alt") == Some("media"),
        }),
        "DELETE" => Ok(JsonRoute::ObjectDelete(bucket, name)),
        _ => Err(Allowed::Get),
    })
}

/// What [`route`] says when it does not give a [`JsonRoute`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// The path takes `POST` only.
    Post,
    /// The path takes `GET` (and perhaps `DELETE`) only.
    Get,
    /// A resumable start into this bucket (G2).
    ResumableStart(String),
}

/// One percent-decoded path segment (no `/`, not empty).
fn segment(s: &str) -> Option<String> {
    if s.is_empty() || s.contains('/') {
        return None;
    }
    percent_decode(s, false).filter(|d| !d.is_empty())
}

/// `B/o/O…` into bucket and object (the name may contain raw `/`).
fn object_of(rest: &str) -> Option<(String, String)> {
    let (bucket, name) = rest.split_once("/o/")?;
    let name = percent_decode(name, false).filter(|n| !n.is_empty())?;
    Some((segment(bucket)?, name))
}

/// Dispatches a [`JsonRoute`].
pub(crate) fn handle(ctx: &mut Ctx<'_>, route: &JsonRoute) -> Outcome {
    match route {
        JsonRoute::BucketList => bucket_list(ctx),
        JsonRoute::BucketInsert => bucket_insert(ctx),
        JsonRoute::BucketGet(b) => bucket_get(ctx, b),
        JsonRoute::BucketDelete(b) => bucket_delete(ctx, b),
        JsonRoute::ObjectList(b) => object_list(ctx, b),
        JsonRoute::ObjectGet {
            bucket,
            name,
            media,
        } => object_get(ctx, bucket, name, *media),
        JsonRoute::ObjectDelete(b, o) => object_delete(ctx, b, o),
        JsonRoute::Upload(b) => upload(ctx, b),
    }
}

fn json_error(status: u16, message: &str) -> Outcome {
    Outcome::Respond(error(GcsApi::Json, status, message))
}

// ---- preconditions ----

/// The object preconditions of a request (query parameters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Preconditions {
    generation_match: Option<u64>,
    generation_not_match: Option<u64>,
    metageneration_match: Option<u64>,
    metageneration_not_match: Option<u64>,
}

/// Why a precondition failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unmet {
    /// A `…Match` failed: `412`.
    Failed,
    /// A `…NotMatch` failed: `304` on a read, `412` on a write.
    NotModified,
}

impl Preconditions {
    /// Reads the four parameters; `Err` names a malformed one.
    pub(crate) fn of(req: &Request) -> Result<Preconditions, String> {
        let get = |name: &str| -> Result<Option<u64>, String> {
            match req.query_param(name) {
                None => Ok(None),
                Some(v) => parse::decimal(v)
                    .map(Some)
                    .ok_or_else(|| format!("Invalid argument: {name}={v:?} is not a number")),
            }
        };
        Ok(Preconditions {
            generation_match: get("ifGenerationMatch")?,
            generation_not_match: get("ifGenerationNotMatch")?,
            metageneration_match: get("ifMetagenerationMatch")?,
            metageneration_not_match: get("ifMetagenerationNotMatch")?,
        })
    }

    /// Checks them against the live object (`None`: there is none). Generation 0 stands
    /// for "no live object".
    pub(crate) fn check(&self, live: Option<&ObjectMeta>) -> Result<(), Unmet> {
        let generation = live.map_or(0, |o| o.generation);
        let metageneration = live.map_or(0, |_| 1);
        if self.generation_match.is_some_and(|g| g != generation) {
            return Err(Unmet::Failed);
        }
        if self
            .metageneration_match
            .is_some_and(|m| m != metageneration)
        {
            return Err(Unmet::Failed);
        }
        if self.generation_not_match.is_some_and(|g| g == generation) {
            return Err(Unmet::NotModified);
        }
        if self
            .metageneration_not_match
            .is_some_and(|m| m == metageneration)
        {
            return Err(Unmet::NotModified);
        }
        Ok(())
    }

    /// Whether any is set.
    pub(crate) fn any(&self) -> bool {
        *self != Preconditions::default()
    }
}

/// The `412` of a write whose precondition failed.
pub(crate) fn precondition_failed() -> Response {
    error(
        GcsApi::Json,
        412,
        "At least one of the pre-conditions you specified did not hold.",
    )
}

// ---- buckets ----

/// A bucket this server knows.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    pub(crate) name: String,
    pub(crate) created: SystemTime,
}

fn bucket_resource(b: &Bucket, origin: &str) -> Value {
    let time = util::rfc3339(b.created);
    json!({
        "kind": "storage#bucket",
        "id": b.name,
        "name": b.name,
        "selfLink": format!("{origin}/storage/v1/b/{}", percent_encode(&b.name)),
        "projectNumber": "0",
        "metageneration": "1",
        "location": "US",
        "locationType": "multi-region",
        "storageClass": "STANDARD",
        "etag": "CAE=",
        "timeCreated": time,
        "updated": time,
        "iamConfiguration": {
            "bucketPolicyOnly": {"enabled": false},
            "uniformBucketLevelAccess": {"enabled": false},
            "publicAccessPrevention": "inherited",
        },
        "rpo": "DEFAULT",
    })
}

/// Bucket names as GCS allows them (3 to 63 of `a-z 0-9 - _ .`, starting and ending with a
/// letter or digit); longer dotted names are not needed here.
fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn bucket_insert(ctx: &mut Ctx<'_>) -> Outcome {
    let body = match ctx.body.read_small(MAX_JSON) {
        Ok(b) => b,
        Err(true) => return json_error(413, "the bucket resource is too large"),
        Err(false) => return Outcome::Drop,
    };
    let name = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v.get("name").and_then(Value::as_str).map(str::to_owned),
        Err(_) => return json_error(400, "Parse Error: the body is not JSON"),
    };
    let Some(name) = name else {
        return json_error(400, "Required: bucket name");
    };
    if !valid_bucket_name(&name) {
        return json_error(400, &format!("Invalid bucket name: {name:?}"));
    }
    match ctx.shared.gcs.insert_bucket(&name) {
        Some(bucket) => {
            Outcome::Respond(Response::new(200).json(&bucket_resource(&bucket, &ctx.origin())))
        }
        None => json_error(
            409,
            "Your previous request to create the named bucket succeeded and you already own it.",
        ),
    }
}

fn bucket_get(ctx: &mut Ctx<'_>, name: &str) -> Outcome {
    match ctx.shared.gcs.bucket(name) {
        Some(b) => Outcome::Respond(Response::new(200).json(&bucket_resource(&b, &ctx.origin()))),
        None => json_error(404, "The specified bucket does not exist."),
    }
}

fn bucket_delete(ctx: &mut Ctx<'_>, name: &str) -> Outcome {
    let gcs = &ctx.shared.gcs;
    if gcs.bucket(name).is_none() {
        return json_error(404, "The specified bucket does not exist.");
    }
    if !gcs.objects_in(name).is_empty() {
        return json_error(409, "The bucket you tried to delete is not empty.");
    }
    gcs.remove_bucket(name);
    Outcome::Respond(Response::new(204))
}

fn bucket_list(ctx: &mut Ctx<'_>) -> Outcome {
    let prefix = ctx.req.query_param("prefix").unwrap_or("");
    let origin = ctx.origin();
    let items: Vec<Value> = ctx
        .shared
        .gcs
        .buckets()
        .iter()
        .filter(|b| b.name.starts_with(prefix))
        .map(|b| bucket_resource(b, &origin))
        .collect();
    Outcome::Respond(Response::new(200).json(&json!({"kind": "storage#buckets", "items": items})))
}

// ---- objects ----

fn object_list(ctx: &mut Ctx<'_>, bucket: &str) -> Outcome {
    if ctx.shared.gcs.bucket(bucket).is_none() {
        return json_error(404, "The specified bucket does not exist.");
    }
    let q = |n: &str| ctx.req.query_param(n).unwrap_or("");
    let prefix = q("prefix");
    let delimiter = q("delimiter");
    let start = q("startOffset");
    let end = q("endOffset");
    let trailing = q("includeTrailingDelimiter") == "true";
    let max = match ctx.req.query_param("maxResults") {
        None => MAX_RESULTS,
        Some(v) => match parse::decimal(v) {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(MAX_RESULTS).min(MAX_RESULTS),
            _ => return json_error(400, &format!("Invalid argument: maxResults={v:?}")),
        },
    };
    let after = match ctx.req.query_param("pageToken") {
        None | Some("") => None,
        Some(t) => match URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(name) => Some(name),
            None => return json_error(400, "Invalid argument: pageToken"),
        },
    };
    let mut objects = ctx.shared.gcs.objects_in(bucket);
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    // Entries in name order: objects, and the prefixes the delimiter folds them into.
    enum Entry {
        Item(Arc<StoredObject>),
        Prefix(String),
    }
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let mut seen = BTreeSet::new();
    for o in objects {
        let name = o.name.as_str();
        if !name.starts_with(prefix) || name < start || (!end.is_empty() && name >= end) {
            continue;
        }
        if !delimiter.is_empty()
            && let Some(i) = name[prefix.len()..].find(delimiter)
        {
            let p = &name[..prefix.len() + i + delimiter.len()];
            if seen.insert(p.to_owned()) {
                entries.push((p.to_owned(), Entry::Prefix(p.to_owned())));
            }
            if !(trailing && name == p) {
                continue;
            }
        }
        entries.push((o.name.clone(), Entry::Item(o)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let origin = ctx.origin();
    let remaining: Vec<&(String, Entry)> = entries
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let page = &remaining[..remaining.len().min(max)];
    // More left: the token points past the last entry answered.
    let next = (remaining.len() > page.len())
        .then(|| page.last().map(|(k, _)| URL_SAFE_NO_PAD.encode(k)))
        .flatten();
    let mut items = Vec::new();
    let mut prefixes = Vec::new();
    for (_, entry) in page {
        match entry {
            Entry::Item(o) => items.push(o.resource(&origin)),
            Entry::Prefix(p) => prefixes.push(p.clone()),
        }
    }
    let mut body = json!({
        "kind": "storage#objects",
        "items": items,
    });
    if !prefixes.is_empty() {
        body["prefixes"] = json!(prefixes);
    }
    if let Some(token) = next {
        body["nextPageToken"] = Value::String(token);
    }
    Outcome::Respond(Response::new(200).json(&body))
}

/// The live object, if it is the `generation` the request asks for (if any).
fn live_object(ctx: &Ctx<'_>, bucket: &str, name: &str) -> Result<Arc<StoredObject>, Outcome> {
    let object = ctx.shared.gcs.object(bucket, name);
    let wanted = match ctx.req.query_param("generation") {
        None => None,
        Some(v) => match parse::decimal(v) {
            Some(g) => Some(g),
            None => {
                return Err(json_error(
                    400,
                    &format!("Invalid argument: generation={v:?}"),
                ));
            }
        },
    };
    match object {
        Some(o) if wanted.is_none_or(|g| g == o.generation) => Ok(o),
        _ => Err(json_error(404, &format!("No such object: {bucket}/{name}"))),
    }
}

fn object_get(ctx: &mut Ctx<'_>, bucket: &str, name: &str, media: bool) -> Outcome {
    let pre = match Preconditions::of(ctx.req) {
        Ok(p) => p,
        Err(m) => return json_error(400, &m),
    };
    let object = match live_object(ctx, bucket, name) {
        Ok(o) => o,
        Err(outcome) => return outcome,
    };
    match pre.check(Some(&object.meta)) {
        Ok(()) => {}
        Err(Unmet::Failed) => return Outcome::Respond(precondition_failed()),
        Err(Unmet::NotModified) => return Outcome::Respond(Response::new(304)),
    }
    if !media {
        return Outcome::Respond(Response::new(200).json(&object.resource(&ctx.origin())));
    }
    download(ctx, object)
}

/// The bytes of an object, whole or one range (RFC 9110 §14), with GCS's headers.
pub(crate) fn download(ctx: &Ctx<'_>, object: Arc<StoredObject>) -> Outcome {
    let size = object.size;
    let range = match parse::byte_range(ctx.req.header("range"), size) {
        Some(r) => r,
        None => return json_error(400, "the Range header is malformed"),
    };
    let base = |status: u16| {
        gcs::object_headers(Response::new(status), &object.meta, true)
            .header("Accept-Ranges", "bytes")
    };
    let content_type = object.content_type.clone();
    Outcome::Respond(match range {
        ByteRange::Whole => base(200).object_body(&content_type, Arc::clone(&object), 0..size),
        ByteRange::Part(r) => base(206)
            .header(
                "Content-Range",
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            )
            .object_body(&content_type, Arc::clone(&object), r),
        ByteRange::Unsatisfiable => error(GcsApi::Json, 416, "Request range not satisfiable")
            .header("Content-Range", format!("bytes */{size}")),
    })
}

fn object_delete(ctx: &mut Ctx<'_>, bucket: &str, name: &str) -> Outcome {
    let pre = match Preconditions::of(ctx.req) {
        Ok(p) => p,
        Err(m) => return json_error(400, &m),
    };
    let object = match live_object(ctx, bucket, name) {
        Ok(o) => o,
        Err(outcome) => return outcome,
    };
    if pre.check(Some(&object.meta)).is_err() {
        return Outcome::Respond(precondition_failed());
    }
    if ctx
        .shared
        .gcs
        .remove_object_generation(bucket, name, object.generation)
    {
        Outcome::Respond(Response::new(204))
    } else {
        // Replaced or removed meanwhile.
        Outcome::Respond(precondition_failed())
    }
}

// ---- simple uploads ----

/// What a simple upload stores besides its bytes.
struct Upload {
    name: String,
    content_type: String,
    metadata: Option<Value>,
    claimed_crc32c: Option<u32>,
    claimed_md5: Option<[u8; 16]>,
}

fn upload(ctx: &mut Ctx<'_>, bucket: &str) -> Outcome {
    let kind = ctx.req.query_param("uploadType").unwrap_or("");
    if kind != "media" && kind != "multipart" {
        return json_error(
            400,
            "Invalid upload type: uploadType must be media, multipart or resumable",
        );
    }
    let pre = match Preconditions::of(ctx.req) {
        Ok(p) => p,
        Err(m) => return json_error(400, &m),
    };
    // Read the whole body (objects are kept in memory).
    let max = ctx.shared.config.max_object_size;
    let mut blob = Blob::default();
    // A media body is the object: hashed as it arrives. A multipart one is parsed first.
    let digest = if kind == "media" {
        Some(crate::hash::read_hashed(
            &mut ctx.body,
            ctx.req.content_length(),
            &mut blob,
            max.saturating_add(64 * 1024),
            ctx.shared.config.md5,
            4 << 20,
        ))
    } else {
        ctx.body.read_into(&mut blob, max.saturating_add(64 * 1024));
        None
    };
    if ctx.body.state() == BodyState::Open {
        return Outcome::Close(error(
            GcsApi::Json,
            413,
            &format!("objects of this server are at most {max} bytes"),
        ));
    }
    if ctx.body.state() != BodyState::Done {
        return Outcome::Drop;
    }
    let (upload, data) = if kind == "media" {
        let Some(name) = ctx.req.query_param("name").filter(|n| !n.is_empty()) else {
            return json_error(400, "Required: object name (the name parameter)");
        };
        let content_type = ctx
            .req
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_owned();
        let upload = Upload {
            name: name.to_owned(),
            content_type,
            metadata: None,
            claimed_crc32c: None,
            claimed_md5: None,
        };
        (upload, blob)
    } else {
        let content_type = ctx.req.header("content-type").unwrap_or("");
        let (meta, media_type, media) = match parse_related(content_type, blob.to_vec()) {
            Ok(parts) => parts,
            Err(message) => return json_error(400, &message),
        };
        drop(blob);
        let field = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
        let name = ctx
            .req
            .query_param("name")
            .map(str::to_owned)
            .or_else(|| field("name"))
            .filter(|n| !n.is_empty());
        let Some(name) = name else {
            return json_error(400, "Required: object name");
        };
        let claimed_crc32c = match field("crc32c") {
            None => None,
            Some(c) => match parse::crc32c_from_base64(&c) {
                Some(c) => Some(c),
                None => return json_error(400, &format!("Invalid crc32c {c:?}")),
            },
        };
        let claimed_md5 = match field("md5Hash") {
            None => None,
            Some(m) => match parse::md5_from_base64(&m) {
                Some(m) => Some(m),
                None => return json_error(400, &format!("Invalid md5Hash {m:?}")),
            },
        };
        let upload = Upload {
            name,
            content_type: field("contentType")
                .or(media_type)
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            metadata: meta.get("metadata").cloned(),
            claimed_crc32c,
            claimed_md5,
        };
        let mut data = Blob::default();
        data.extend_from_slice(&media);
        (upload, data)
    };
    let digest = digest.unwrap_or_else(|| {
        let mut d = crate::hash::Digest::new(ctx.shared.config.md5 || upload.claimed_md5.is_some());
        d.update_from(&data, 0..data.len());
        d
    });
    store(ctx, bucket, upload, data, &digest, pre)
}

fn store(
    ctx: &Ctx<'_>,
    bucket: &str,
    upload: Upload,
    data: Blob,
    digest: &crate::hash::Digest,
    pre: Preconditions,
) -> Outcome {
    let crc = digest.crc32c;
    let md5 = digest.md5_digest();
    if let Some(c) = upload.claimed_crc32c.filter(|c| *c != crc) {
        return json_error(
            400,
            &format!(
                "Provided CRC32C \"{}\" doesn't match calculated CRC32C \"{}\".",
                parse::crc32c_base64(c),
                parse::crc32c_base64(crc)
            ),
        );
    }
    if let (Some(want), Some(have)) = (upload.claimed_md5, md5)
        && want != have
    {
        return json_error(
            400,
            &format!(
                "Provided MD5 hash \"{}\" doesn't match calculated MD5 hash \"{}\".",
                parse::md5_base64(&want),
                parse::md5_base64(&have)
            ),
        );
    }
    let meta = ObjectMeta {
        bucket: bucket.to_owned(),
        name: upload.name,
        content_type: upload.content_type,
        size: data.len(),
        crc32c: crc,
        md5: md5.filter(|_| ctx.shared.config.md5),
        generation: ctx.shared.gcs.next_generation(),
        created: SystemTime::now(),
        metadata: upload.metadata,
    };
    match ctx.shared.gcs.store_if(meta, data, &pre) {
        Ok(object) => Outcome::Respond(Response::new(200).json(&object.resource(&ctx.origin()))),
        Err(_) => Outcome::Respond(precondition_failed()),
    }
}

/// Splits a `multipart/related` body (RFC 2387) into its JSON metadata, the media part's
/// `Content-Type` and the media, with multer: the body is in memory, so its async parser
/// runs to completion on `block_on` over a one-item stream (no runtime, no waiting).
fn parse_related(
    content_type: &str,
    body: Vec<u8>,
) -> Result<(Value, Option<String>, Bytes), String> {
    let mime: mime::Mime = content_type
        .parse()
        .map_err(|_| format!("Invalid Content-Type {content_type:?} for a multipart upload"))?;
    if mime.type_() != mime::MULTIPART || mime.subtype().as_str() != "related" {
        return Err("a multipart upload needs Content-Type: multipart/related".to_owned());
    }
    let boundary = mime
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| "multipart/related needs a boundary parameter".to_owned())?;
    let stream =
        futures::stream::once(
            async move { Ok::<Bytes, std::convert::Infallible>(Bytes::from(body)) },
        );
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures::executor::block_on(async move {
        let mut parts: Vec<(Option<String>, Bytes)> = Vec::new();
        loop {
            let field = multipart
                .next_field()
                .await
                .map_err(|e| format!("Malformed multipart body: {e}"))?;
            let Some(field) = field else { break };
            if parts.len() == 2 {
                return Err("a multipart upload has exactly two parts: metadata, media".to_owned());
            }
            let ty = field.content_type().map(ToString::to_string);
            let data = field
                .bytes()
                .await
                .map_err(|e| format!("Malformed multipart body: {e}"))?;
            parts.push((ty, data));
        }
        let mut parts = parts.into_iter();
        let (Some((_, meta)), Some((media_type, media))) = (parts.next(), parts.next()) else {
            return Err("a multipart upload has exactly two parts: metadata, media".to_owned());
        };
        let meta: Value = serde_json::from_slice(&meta)
            .map_err(|_| "the metadata part is not JSON".to_owned())?;
        if !meta.is_object() {
            return Err("the metadata part is not a JSON object".to_owned());
        }
        Ok((meta, media_type, media))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn related(meta: &str, media: &[u8]) -> Vec<u8> {
        let mut body = format!(
            "--==b==\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--==b==\r\ncontent-type: text/plain\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(media);
        body.extend_from_slice(b"\r\n--==b==--\r\n");
        body
    }

    #[test]
    fn multipart_related_gives_metadata_type_and_media() {
        let media = b"\r\n--==b= not the boundary\r\n\x00\xff";
        let (meta, ty, data) = parse_related(
            "multipart/related; boundary=\"==b==\"",
            related(r#"{"name":"o.txt","crc32c":"AAAAAA=="}"#, media),
        )
        .unwrap();
        assert_eq!(meta["name"], "o.txt");
        assert_eq!(ty.as_deref(), Some("text/plain"));
        assert_eq!(&data[..], media);
    }

    #[test]
    fn malformed_multipart_is_refused() {
        let ok = related("{}", b"x");
        for (ct, body) in [
            ("multipart/form-data; boundary=\"==b==\"", ok.clone()),
            ("multipart/related", ok.clone()),
            ("text/plain", ok.clone()),
            (
                "multipart/related; boundary=\"==b==\"",
                related("[1]", b"x"),
            ),
            (
                "multipart/related; boundary=\"==b==\"",
                related("nope", b"x"),
            ),
            (
                "multipart/related; boundary=\"==b==\"",
                ok[..ok.len() - 14].to_vec(),
            ),
            ("multipart/related; boundary=\"==b==\"", b"garbage".to_vec()),
        ] {
            assert!(parse_related(ct, body).is_err(), "{ct}");
        }
        // Three parts.
        let mut three = related("{}", b"x");
        three.truncate(three.len() - 4);
        three.extend_from_slice(b"\r\ncontent-type: a/b\r\n\r\nmore\r\n--==b==--\r\n");
        assert!(parse_related("multipart/related; boundary=\"==b==\"", three).is_err());
    }

    #[test]
    fn preconditions_follow_generation_zero_for_no_live_object() {
        let meta = ObjectMeta {
            bucket: "b".into(),
            name: "o".into(),
            content_type: "x/y".into(),
            size: 0,
            crc32c: 0,
            md5: None,
            generation: 7,
            created: SystemTime::now(),
            metadata: None,
        };
        let p = |gm, gnm| Preconditions {
            generation_match: gm,
            generation_not_match: gnm,
            ..Preconditions::default()
        };
        assert_eq!(p(Some(0), None).check(None), Ok(()));
        assert_eq!(p(Some(0), None).check(Some(&meta)), Err(Unmet::Failed));
        assert_eq!(p(Some(7), None).check(Some(&meta)), Ok(()));
        assert_eq!(p(Some(8), None).check(Some(&meta)), Err(Unmet::Failed));
        assert_eq!(p(None, Some(7)).check(Some(&meta)), Err(Unmet::NotModified));
        assert_eq!(p(None, Some(0)).check(Some(&meta)), Ok(()));
        assert_eq!(p(None, Some(0)).check(None), Err(Unmet::NotModified));
        assert!(!Preconditions::default().any());
    }

    #[test]
    fn bucket_names_follow_gcs_rules() {
        for ok in ["abc", "my-bucket_1.x", "0ab"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in ["ab", "Abc", "-ab", "ab-", "a b", &"a".repeat(64)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
