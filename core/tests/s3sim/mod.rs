//! `S3Sim`: a simulated S3 multipart server (rules S2–S9 in `docs/protocols/s3.md`), driven
//! in-process, for the scripted tests and the deterministic simulation of the S3 upload.
//!
//! It keeps uploads (parts by number: bytes, ETag, CRC32C) and completed objects, checks the
//! client (part CRC32C header against the bytes, parts listed in ascending order with the
//! ETags it gave, the object's CRC32C on Complete) and records every breach in
//! [`S3Sim::violations`]. Its quirks are switches: the ListParts page size, whether a repeated
//! Complete meets `NoSuchUpload` (MinIO, S7) or succeeds again (S3), whether Complete's
//! answer carries the object's CRC32C, and lies told once.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request, Response};
use md5::{Digest as _, Md5};

/// The endpoint every simulated request goes to (path-style, S1).
pub const ENDPOINT: &str = "https://s3.sim.example";

/// One uploaded part.
#[derive(Clone, Debug)]
pub struct Part {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The ETag answered (quoted).
    pub etag: String,
    /// Its CRC32C.
    pub crc32c: u32,
}

/// A lie the server tells once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Lie {
    /// An UploadPart answer echoes another CRC32C than the part's.
    PartCrc,
    /// Complete's answer names another object CRC32C.
    ObjectCrc,
    /// Complete's answer names no CRC32C, and neither does the HEAD.
    NoChecksum,
    /// ListParts lists a part with another size than it holds.
    ListedSize,
}

/// The server.
#[derive(Debug, Default)]
pub struct S3Sim {
    /// Open uploads by ID.
    pub uploads: HashMap<String, BTreeMap<u32, Part>>,
    /// Completed uploads: ID → the object key (for a repeated Complete).
    pub completed: HashMap<String, String>,
    /// Objects by key: bytes, ETag, CRC32C.
    pub objects: HashMap<String, (Vec<u8>, String, u32)>,
    /// The part CRC32Cs of each object, in order (for a `COMPOSITE` value, S11).
    pub part_crcs: HashMap<String, Vec<u32>>,
    /// ListParts page size (S5; real servers: up to 1,000).
    pub page_size: usize,
    /// A repeated Complete of a completed upload answers `404 NoSuchUpload` (MinIO), not
    /// success (S3).
    pub repeat_complete_gone: bool,
    /// Complete's answer omits the object's CRC32C (the client must HEAD).
    pub complete_without_crc: bool,
    /// HEAD shows the CRC32C as `COMPOSITE` (`base64-N`) instead of `FULL_OBJECT`.
    pub composite: bool,
    /// A lie to tell once.
    pub lie: Option<S3Lie>,
    /// The lie was told.
    pub lied: bool,
    /// Breaches of the protocol by the client.
    pub violations: Vec<String>,
    /// Requests handled, by kind name.
    pub counts: BTreeMap<&'static str, u32>,
    next_id: u64,
}

fn query_pairs(request: &Request<()>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), decode(v)),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An S3 error answer (S9).
pub fn error(status: u16, code: &str) -> Response<Bytes> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>simulated</Message><RequestId>r</RequestId></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Bytes::from(body))
        .unwrap()
}

fn xml(status: u16, body: String) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Bytes::from(body))
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(crc: u32) -> String {
    BASE64.encode(crc.to_be_bytes())
}

/// Reads `<Part><PartNumber>N</PartNumber><ETag>E</ETag>…</Part>` pairs with quick-xml.
fn complete_parts(body: &[u8]) -> Option<Vec<(u32, String)>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut parts = Vec::new();
    let mut current: Option<(Option<u32>, Option<String>)> = None;
    let mut element = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                element = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if element == "Part" {
                    current = Some((None, None));
                }
            }
            Event::Text(t) => {
                let text = t.decode().ok()?.into_owned();
                let text = quick_xml::escape::unescape(&text).ok()?.into_owned();
                if let Some(part) = current.as_mut() {
                    match element.as_str() {
                        "PartNumber" => part.0 = text.trim().parse().ok(),
                        "ETag" => part.1 = Some(text),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"Part" {
                    let (n, etag) = current.take()?;
                    parts.push((n?, etag?));
                }
                element.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Some(parts)
}

impl S3Sim {
    /// A server with S3's behaviour and 1,000-part pages.
    pub fn new() -> Self {
        S3Sim {
            page_size: 1000,
            ..S3Sim::default()
        }
    }

    fn lie_now(&mut self, lie: S3Lie) -> bool {
        if self.lie == Some(lie) && !self.lied {
            self.lied = true;
            return true;
        }
        false
    }

    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }

    /// The object's key from the request path (`/bucket/key`).
    fn key_of(request: &Request<()>) -> String {
        decode(request.uri().path())
    }

    /// The request kind, as the fault selectors of the simulation name it.
    pub fn kind(request: &Request<()>) -> &'static str {
        let q = query_pairs(request);
        let has = |k: &str| q.iter().any(|(n, _)| n == k);
        match *request.method() {
            Method::POST if has("uploads") => "create",
            Method::PUT if has("partNumber") => "part",
            Method::GET if has("uploadId") => "list",
            Method::POST if has("uploadId") => "complete",
            Method::DELETE => "abort",
            Method::HEAD => "head",
            _ => "other",
        }
    }

    /// Handles one request with its body.
    pub fn handle(&mut self, request: &Request<()>, body: &[u8]) -> Response<Bytes> {
        let kind = Self::kind(request);
        self.count(kind);
        let q = query_pairs(request);
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if request.headers().contains_key("authorization") {
            self.violations
                .push("the core signed a request itself".into());
        }
        let key = Self::key_of(request);
        match kind {
            "create" => {
                if request
                    .headers()
                    .get("x-amz-checksum-algorithm")
                    .map(|v| v.as_bytes())
                    != Some(b"CRC32C")
                {
                    self.violations
                        .push("Create without x-amz-checksum-algorithm: CRC32C".into());
                }
                self.next_id += 1;
                let id = format!("up+load/{}=", self.next_id);
                self.uploads.insert(id.clone(), BTreeMap::new());
                xml(
                    200,
                    format!(
                        "<?xml version=\"1.0\"?><InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>b</Bucket><Key>k</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
                        quick_xml::escape::escape(&id)
                    ),
                )
            }
            "part" => {
                let id = get("uploadId").unwrap_or_default();
                let number: u32 = get("partNumber").and_then(|n| n.parse().ok()).unwrap_or(0);
                if !(1..=10_000).contains(&number) {
                    return error(400, "InvalidArgument");
                }
                let crc = crc32c::crc32c(body);
                let sent = request
                    .headers()
                    .get("x-amz-checksum-crc32c")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if sent.as_deref() != Some(b64(crc).as_str()) {
                    self.violations.push(format!(
                        "part {number}: x-amz-checksum-crc32c is not the bytes'"
                    ));
                    return error(400, "BadDigest");
                }
                let Some(parts) = self.uploads.get_mut(&id) else {
                    return error(404, "NoSuchUpload");
                };
                let etag = format!("\"{}\"", hex(&Md5::digest(body)));
                parts.insert(
                    number,
                    Part {
                        bytes: body.to_vec(),
                        etag: etag.clone(),
                        crc32c: crc,
                    },
                );
                let echoed = if self.lie_now(S3Lie::PartCrc) {
                    crc ^ 1
                } else {
                    crc
                };
                Response::builder()
                    .status(200)
                    .header("etag", etag)
                    .header("x-amz-checksum-crc32c", b64(echoed))
                    .body(Bytes::new())
                    .unwrap()
            }
            "list" => {
                let id = get("uploadId").unwrap_or_default();
                let marker: u32 = get("part-number-marker")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let max: usize = get("max-parts")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1000)
                    .min(self.page_size);
                let lie = self.lie == Some(S3Lie::ListedSize) && !self.lied;
                let Some(parts) = self.uploads.get(&id) else {
                    return error(404, "NoSuchUpload");
                };
                let after: Vec<(&u32, &Part)> = parts.range(marker + 1..).collect();
                let page = &after[..after.len().min(max)];
                let truncated = after.len() > page.len();
                let mut out = String::from(
                    "<?xml version=\"1.0\"?><ListPartsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
                );
                out.push_str(&format!(
                    "<UploadId>{}</UploadId><PartNumberMarker>{marker}</PartNumberMarker>",
                    quick_xml::escape::escape(&id)
                ));
                let mut told = false;
                for (n, p) in page {
                    let size = if lie && !told {
                        told = true;
                        p.bytes.len() + 1
                    } else {
                        p.bytes.len()
                    };
                    out.push_str(&format!(
                        "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag><Size>{size}</Size><ChecksumCRC32C>{}</ChecksumCRC32C></Part>",
                        quick_xml::escape::escape(&p.etag),
                        b64(p.crc32c)
                    ));
                }
                if told {
                    self.lied = true;
                }
                if let Some((last, _)) = page.last() {
                    out.push_str(&format!(
                        "<NextPartNumberMarker>{last}</NextPartNumberMarker>"
                    ));
                }
                out.push_str(&format!(
                    "<MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated></ListPartsResult>"
                ));
                xml(200, out)
            }
            "complete" => self.complete(&get("uploadId").unwrap_or_default(), &key, request, body),
            "abort" => {
                let id = get("uploadId").unwrap_or_default();
                match self.uploads.remove(&id) {
                    Some(_) => Response::builder().status(204).body(Bytes::new()).unwrap(),
                    None => error(404, "NoSuchUpload"),
                }
            }
            "head" => match self.objects.get(&key) {
                Some((bytes, etag, crc)) => {
                    let shown = if self.lie == Some(S3Lie::NoChecksum) {
                        None
                    } else if self.composite {
                        let crcs = self.part_crcs.get(&key).cloned().unwrap_or_default();
                        let raw = crcs
                            .iter()
                            .fold(0, |acc, c| crc32c::crc32c_append(acc, &c.to_be_bytes()));
                        Some(format!("{}-{}", b64(raw), crcs.len()))
                    } else {
                        Some(b64(*crc))
                    };
                    let mut r = Response::builder()
                        .status(200)
                        .header("content-length", bytes.len())
                        .header("etag", etag.as_str());
                    let enabled = request
                        .headers()
                        .get("x-amz-checksum-mode")
                        .map(|v| v.as_bytes())
                        == Some(b"ENABLED");
                    if let (Some(v), true) = (shown, enabled) {
                        r = r.header("x-amz-checksum-crc32c", v);
                    }
                    r.body(Bytes::new()).unwrap()
                }
                None => Response::builder().status(404).body(Bytes::new()).unwrap(),
            },
            _ => error(400, "InvalidRequest"),
        }
    }

    fn complete(
        &mut self,
        id: &str,
        key: &str,
        request: &Request<()>,
        body: &[u8],
    ) -> Response<Bytes> {
        if let Some(done_key) = self.completed.get(id).cloned() {
            if self.repeat_complete_gone {
                return error(404, "NoSuchUpload");
            }
            let (_, etag, crc) = self.objects.get(&done_key).cloned().unwrap_or_default();
            return self.complete_answer(&etag, crc);
        }
        let Some(parts) = self.uploads.get(id).cloned() else {
            return error(404, "NoSuchUpload");
        };
        let Some(listed) = complete_parts(body) else {
            self.violations.push("Complete body is not XML".into());
            return error(400, "MalformedXML");
        };
        if listed.is_empty() {
            return error(400, "MalformedXML");
        }
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            self.violations
                .push("Complete lists parts out of order".into());
            return error(400, "InvalidPartOrder");
        }
        let mut object = Vec::new();
        let mut md5s = Vec::new();
        let mut crcs = Vec::new();
        for (n, etag) in &listed {
            match parts.get(n) {
                Some(p) if &p.etag == etag => {
                    object.extend_from_slice(&p.bytes);
                    md5s.extend_from_slice(&Md5::digest(&p.bytes));
                    crcs.push(p.crc32c);
                }
                _ => {
                    self.violations
                        .push(format!("Complete lists part {n} with an ETag not held"));
                    return error(400, "InvalidPart");
                }
            }
        }
        let crc = crc32c::crc32c(&object);
        let sent = request
            .headers()
            .get("x-amz-checksum-crc32c")
            .and_then(|v| v.to_str().ok());
        if sent != Some(b64(crc).as_str()) {
            self.violations
                .push("Complete's x-amz-checksum-crc32c is not the object's".into());
            return error(400, "BadDigest");
        }
        let etag = format!("\"{}-{}\"", hex(&Md5::digest(&md5s)), listed.len());
        self.uploads.remove(id);
        self.completed.insert(id.to_owned(), key.to_owned());
        self.objects
            .insert(key.to_owned(), (object, etag.clone(), crc));
        self.part_crcs.insert(key.to_owned(), crcs);
        self.complete_answer(&etag, crc)
    }

    fn complete_answer(&mut self, etag: &str, crc: u32) -> Response<Bytes> {
        let crc_element = if self.complete_without_crc || self.lie == Some(S3Lie::NoChecksum) {
            String::new()
        } else if self.lie_now(S3Lie::ObjectCrc) {
            format!("<ChecksumCRC32C>{}</ChecksumCRC32C>", b64(crc ^ 1))
        } else {
            format!(
                "<ChecksumCRC32C>{}</ChecksumCRC32C><ChecksumType>FULL_OBJECT</ChecksumType>",
                b64(crc)
            )
        };
        // S7: whitespace before the document while the object is assembled.
        xml(
            200,
            format!(
                "\n  \n<?xml version=\"1.0\"?><CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Location>{ENDPOINT}/b/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>{}</ETag>{crc_element}</CompleteMultipartUploadResult>",
                quick_xml::escape::escape(etag)
            ),
        )
    }
}
