//! The XML of S3 multipart uploads: reading every answer (S2, S5, S6, S7, S9) and writing the
//! `CompleteMultipartUpload` request body (S6), both with `quick-xml`.
//!
//! Each `parse_*` function takes a whole response body and decides by its root element: the
//! expected result becomes [`S3Answer::Success`], an `<Error>` becomes [`S3Answer::Error`] —
//! also inside a `200` to Complete (S7) — and any other root is
//! [`XmlError::UnexpectedRoot`]. Whitespace before the document, which S3 sends while it
//! assembles the object, is fine. A body that ends early is [`XmlError::Truncated`] and one
//! that is not XML is [`XmlError::Malformed`]; the caller treats both as a transport failure
//! ([`XmlError::counts_as_transport_failure`]).
//!
//! Elements are matched by local name, with or without a namespace or prefix: S3, R2 and MinIO
//! use `http://s3.amazonaws.com/doc/2006-03-01/`, GCS's XML API another URI, and some
//! servers none. Unknown elements are skipped.
//!
//! Everything is bounded, so a hostile answer cannot grow memory: the body
//! ([`MAX_BODY_LEN`]), the nesting depth ([`MAX_DEPTH`]), the number of elements
//! ([`MAX_ELEMENTS`]), each element's text ([`MAX_TEXT_LEN`]; an error message is cut to
//! [`MAX_MESSAGE_LEN`] instead) and the parts of one `ListParts` page ([`MAX_PARTS_PER_PAGE`],
//! S5).

use std::fmt;

use http::StatusCode;
use quick_xml::Reader;
use quick_xml::errors::{Error as QuickXmlError, SyntaxError};
use quick_xml::escape::{partial_escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, BytesText, Event};

use super::checksum::{ChecksumAlgorithm, ChecksumType, part_crc32c};
use super::plan::MAX_PARTS;

/// The largest response body read, in bytes (leading whitespace included). A full `ListParts`
/// page of 1,000 parts with checksums is well under 1 MiB.
pub const MAX_BODY_LEN: usize = 4 * 1024 * 1024;

/// The deepest nesting of elements accepted (S3's answers nest three deep).
pub const MAX_DEPTH: usize = 16;

/// The most elements accepted in one answer (a full `ListParts` page has about 7,000).
pub const MAX_ELEMENTS: usize = 32_768;

/// The longest text kept of one element, in bytes (an object key is at most 1,024 bytes; a
/// `Location` holds it percent-encoded).
pub const MAX_TEXT_LEN: usize = 4096;

/// The longest error message kept, in bytes; longer messages are cut, not refused.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The most parts one `ListParts` page may list (S5).
pub const MAX_PARTS_PER_PAGE: usize = 1000;

/// The namespace S3 puts on its documents, also written on the Complete body.
pub const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The longest root name quoted in [`XmlError::UnexpectedRoot`].
const MAX_QUOTED_NAME: usize = 64;

/// Why an answer's XML could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body ended before its document did (or held no document at all): the connection
    /// was cut. Counts as a transport failure (S7).
    #[error("the answer ended before its XML document was complete")]
    Truncated,
    /// The body is not well-formed XML (or has a document type declaration, which S3 never
    /// sends). Counts as a transport failure (S7).
    #[error("the answer is not well-formed XML")]
    Malformed,
    /// The body is longer than [`MAX_BODY_LEN`].
    #[error("the answer is longer than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("the answer nests elements deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("the answer has more than {limit} elements")]
    TooManyElements {
        /// The limit.
        limit: usize,
    },
    /// A `ListParts` page lists more than [`MAX_PARTS_PER_PAGE`] parts (S5).
    #[error("the answer lists more than {limit} parts on one page")]
    TooManyParts {
        /// The limit.
        limit: usize,
    },
    /// The root element is neither the expected result nor `Error`.
    #[error("the answer is a {found} document, not the {expected} that was expected")]
    UnexpectedRoot {
        /// The root expected.
        expected: &'static str,
        /// The root found (its local name, cut to 64 bytes).
        found: String,
    },
    /// A required element is missing.
    #[error("the answer has no {element} element")]
    Missing {
        /// The element's name.
        element: &'static str,
    },
    /// An element that may appear once appears more than once.
    #[error("the answer has more than one {element} element")]
    Duplicate {
        /// The element's name.
        element: &'static str,
    },
    /// An element's value is not what the protocol allows (not a number, a part number outside
    /// 1–10,000, child elements where text belongs, a pagination marker that does not advance…).
    #[error("the answer's {element} element has an invalid value")]
    Invalid {
        /// The element's name.
        element: &'static str,
    },
    /// An element's text is longer than [`MAX_TEXT_LEN`].
    #[error("the answer's {element} element is longer than {limit} bytes")]
    TooLong {
        /// The element's name.
        element: &'static str,
        /// The limit.
        limit: usize,
    },
}

impl XmlError {
    /// Whether the body is cut short or not XML at all, which a caller treats as a transport
    /// failure rather than as the server's answer (S7): retry, and after a Complete, check
    /// whether it took effect.
    pub fn counts_as_transport_failure(&self) -> bool {
        matches!(self, XmlError::Truncated | XmlError::Malformed)
    }
}

// ---------------------------------------------------------------------------------------------
// A bounded element tree
// ---------------------------------------------------------------------------------------------

/// One element of a parsed answer: local name, text (cut at [`MAX_TEXT_LEN`]) and children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    cut: bool,
    children: Vec<Element>,
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_at(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Element {
    fn open(start: &BytesStart<'_>) -> Result<Self, XmlError> {
        let name = std::str::from_utf8(start.local_name().into_inner())
            .map_err(|_| XmlError::Malformed)?;
        Ok(Element {
            name: name.to_owned(),
            ..Element::default()
        })
    }

    fn push_text(&mut self, text: &str) {
        if self.cut {
            return;
        }
        let room = MAX_TEXT_LEN - self.text.len();
        let kept = cut_at(text, room);
        self.text.push_str(kept);
        self.cut = kept.len() < text.len();
    }

    /// The only child called `name`, if any.
    fn child(&self, name: &'static str) -> Result<Option<&Element>, XmlError> {
        let mut found = None;
        for child in self.children.iter().filter(|c| c.name == name) {
            if found.replace(child).is_some() {
                return Err(XmlError::Duplicate { element: name });
            }
        }
        Ok(found)
    }

    /// The text of the only child called `name`, if any; it must hold text only.
    fn text_of(&self, name: &'static str) -> Result<Option<&str>, XmlError> {
        let Some(child) = self.child(name)? else {
            return Ok(None);
        };
        if !child.children.is_empty() {
            return Err(XmlError::Invalid { element: name });
        }
        if child.cut {
            return Err(XmlError::TooLong {
                element: name,
                limit: MAX_TEXT_LEN,
            });
        }
        Ok(Some(child.text.as_str()))
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, XmlError> {
        Ok(self.text_of(name)?.map(str::to_owned))
    }

    /// A non-negative decimal number; an empty element counts as absent.
    fn number<T: std::str::FromStr>(&self, name: &'static str) -> Result<Option<T>, XmlError> {
        let Some(text) = self.text_of(name)? else {
            return Ok(None);
        };
        let text = text.trim_matches(|c: char| c.is_ascii() && is_xml_space(c as u8));
        if text.is_empty() {
            return Ok(None);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(XmlError::Invalid { element: name });
        }
        text.parse()
            .map(Some)
            .map_err(|_| XmlError::Invalid { element: name })
    }

    /// An `xs:boolean` (`true`, `false`, `1`, `0`); an empty element counts as absent.
    fn boolean(&self, name: &'static str) -> Result<Option<bool>, XmlError> {
        let Some(text) = self.text_of(name)? else {
            return Ok(None);
        };
        match text.trim_matches(|c: char| c.is_ascii() && is_xml_space(c as u8)) {
            "" => Ok(None),
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(XmlError::Invalid { element: name }),
        }
    }

    fn checksums(&self) -> Result<Checksums, XmlError> {
        let mut out = Checksums::default();
        for (slot, algorithm) in out.values.iter_mut().zip(ChecksumAlgorithm::ALL) {
            *slot = self.string(algorithm.xml_element())?;
        }
        Ok(out)
    }

    fn checksum_type(&self) -> Result<Option<ChecksumType>, XmlError> {
        match self.text_of("ChecksumType")? {
            None | Some("") => Ok(None),
            Some(t) => ChecksumType::parse(t).map(Some).ok_or(XmlError::Invalid {
                element: "ChecksumType",
            }),
        }
    }
}

/// Maps a `quick-xml` error: input that ended inside markup is a cut body, the rest is
/// malformed.
fn reader_error(error: QuickXmlError) -> XmlError {
    match error {
        QuickXmlError::Syntax(
            SyntaxError::InvalidBangMarkup
            | SyntaxError::UnclosedPI
            | SyntaxError::UnclosedXmlDecl
            | SyntaxError::UnclosedComment
            | SyntaxError::UnclosedDoctype
            | SyntaxError::UnclosedCData
            | SyntaxError::UnclosedTag
            | SyntaxError::UnclosedSingleQuotedAttributeValue
            | SyntaxError::UnclosedDoubleQuotedAttributeValue,
        ) => XmlError::Truncated,
        _ => XmlError::Malformed,
    }
}

/// Parses a whole body into its root element, within every bound.
fn parse_document(body: &[u8]) -> Result<Element, XmlError> {
    if body.len() > MAX_BODY_LEN {
        return Err(XmlError::TooLarge {
            limit: MAX_BODY_LEN,
        });
    }
    // S7: S3 may send whitespace before the document while it assembles the object.
    let start = body
        .iter()
        .position(|&b| !is_xml_space(b))
        .unwrap_or(body.len());
    let mut reader = Reader::from_reader(&body[start..]);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    config.allow_dangling_amp = false;
    config.allow_unmatched_ends = false;

    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    // Each event consumes input, so this loop ends within the body's length.
    loop {
        let event = reader.read_event().map_err(reader_error)?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                if root.is_some() {
                    return Err(XmlError::Malformed); // a second root
                }
                if open.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { limit: MAX_DEPTH });
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements {
                        limit: MAX_ELEMENTS,
                    });
                }
                open.push(Element::open(&start)?);
                if empty {
                    close(&mut open, &mut root)?;
                }
            }
            Event::End(_) => close(&mut open, &mut root)?,
            Event::Text(text) => {
                let text = text.xml10_content().map_err(|_| XmlError::Malformed)?;
                match open.last_mut() {
                    Some(element) => element.push_text(&text),
                    // Only whitespace may stand outside the root.
                    None if text.bytes().all(is_xml_space) => {}
                    None => return Err(XmlError::Malformed),
                }
            }
            Event::CData(data) => {
                let text = data.xml10_content().map_err(|_| XmlError::Malformed)?;
                open.last_mut().ok_or(XmlError::Malformed)?.push_text(&text);
            }
            Event::GeneralRef(reference) => {
                let element = open.last_mut().ok_or(XmlError::Malformed)?;
                if let Some(c) = reference
                    .resolve_char_ref()
                    .map_err(|_| XmlError::Malformed)?
                {
                    element.push_text(c.encode_utf8(&mut [0; 4]));
                } else {
                    let name = reference.decode().map_err(|_| XmlError::Malformed)?;
                    // Only the five predefined entities: S3 declares no others.
                    let text = resolve_predefined_entity(&name).ok_or(XmlError::Malformed)?;
                    element.push_text(text);
                }
            }
            Event::DocType(_) => return Err(XmlError::Malformed),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                return match root {
                    Some(root) if open.is_empty() => Ok(root),
                    _ => Err(XmlError::Truncated),
                };
            }
        }
    }
}

/// Closes the innermost open element (quick-xml has checked the end tag's name).
fn close(open: &mut Vec<Element>, root: &mut Option<Element>) -> Result<(), XmlError> {
    let element = open.pop().ok_or(XmlError::Malformed)?;
    match open.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
    Ok(())
}

/// Parses `body`, expecting the root `expected` (or `Error`).
fn parse_answer<T>(
    body: &[u8],
    expected: &'static str,
    read: impl FnOnce(&Element) -> Result<T, XmlError>,
) -> Result<S3Answer<T>, XmlError> {
    parse_answer_named(body, expected, None, read)
}

/// [`parse_answer`], also taking the root `alias` for the expected result.
fn parse_answer_named<T>(
    body: &[u8],
    expected: &'static str,
    alias: Option<&'static str>,
    read: impl FnOnce(&Element) -> Result<T, XmlError>,
) -> Result<S3Answer<T>, XmlError> {
    let root = parse_document(body)?;
    if root.name == expected || alias.is_some_and(|a| root.name == a) {
        read(&root).map(S3Answer::Success)
    } else if root.name == "Error" {
        Ok(S3Answer::Error(S3Error::read(&root)))
    } else {
        Err(XmlError::UnexpectedRoot {
            expected,
            found: cut_at(&root.name, MAX_QUOTED_NAME).to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// What an S3 call answered: its result, or an `<Error>` document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Answer<T> {
    /// The expected result document.
    Success(T),
    /// An `<Error>` document, which S3 can send even with a `200` (S7).
    Error(S3Error),
}

/// The checksums S3 lists for a part or an object (`ChecksumCRC32C` and the other
/// `Checksum<NAME>` elements), kept verbatim: base64, with `-<parts>` for a `COMPOSITE` object
/// value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checksums {
    values: [Option<String>; ChecksumAlgorithm::ALL.len()],
}

impl Checksums {
    /// The value given for `algorithm`, if any.
    pub fn get(&self, algorithm: ChecksumAlgorithm) -> Option<&str> {
        ChecksumAlgorithm::ALL
            .iter()
            .position(|a| *a == algorithm)
            .and_then(|i| self.values[i].as_deref())
    }

    /// The `ChecksumCRC32C` value, if any (read it with
    /// [`parse_crc32c`](super::checksum::parse_crc32c)).
    pub fn crc32c(&self) -> Option<&str> {
        self.get(ChecksumAlgorithm::Crc32c)
    }

    /// Every value given, with its algorithm.
    pub fn iter(&self) -> impl Iterator<Item = (ChecksumAlgorithm, &str)> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .zip(&self.values)
            .filter_map(|(a, v)| Some((a, v.as_deref()?)))
    }

    /// Whether no checksum was given.
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }
}

/// The answer to CreateMultipartUpload (S2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitiateMultipartUploadResult {
    /// The bucket, as the server names it.
    pub bucket: Option<String>,
    /// The object key, as the server names it.
    pub key: Option<String>,
    /// The upload ID, opaque: URL-encode it into every later request's query (S1).
    pub upload_id: String,
}

/// Reads the answer to CreateMultipartUpload (`InitiateMultipartUploadResult`, S2).
///
/// # Errors
/// [`XmlError`]; [`XmlError::Missing`] when there is no non-empty `UploadId`.
pub fn parse_initiate_multipart_upload(
    body: &[u8],
) -> Result<S3Answer<InitiateMultipartUploadResult>, XmlError> {
    parse_answer(body, "InitiateMultipartUploadResult", |root| {
        let upload_id =
            root.string("UploadId")?
                .filter(|id| !id.is_empty())
                .ok_or(XmlError::Missing {
                    element: "UploadId",
                })?;
        Ok(InitiateMultipartUploadResult {
            bucket: root.string("Bucket")?,
            key: root.string("Key")?,
            upload_id,
        })
    })
}

/// One part listed by ListParts (S5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedPart {
    /// The part number, 1–10,000.
    pub part_number: u32,
    /// The part's ETag, verbatim with its quotes (some servers list none).
    pub etag: Option<String>,
    /// The part's size in bytes, if listed; a part whose size is unknown cannot be accepted.
    pub size: Option<u64>,
    /// The part's checksums, if listed.
    pub checksums: Checksums,
}

/// One page of ListParts (S5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPartsResult {
    /// The bucket, as the server names it.
    pub bucket: Option<String>,
    /// The object key, as the server names it.
    pub key: Option<String>,
    /// The upload ID, as the server names it.
    pub upload_id: Option<String>,
    /// The marker this page starts after (exclusive), if given.
    pub part_number_marker: Option<u32>,
    /// The marker for the next page, if given.
    pub next_part_number_marker: Option<u32>,
    /// The most parts the server puts on a page, if given.
    pub max_parts: Option<u32>,
    /// Whether more pages follow (`false` when the element is absent).
    pub is_truncated: bool,
    /// The parts on this page, in the server's order (at most 1,000).
    pub parts: Vec<ListedPart>,
    /// The upload's checksum algorithm, if given (as S3 names it, e.g. `CRC32C`).
    pub checksum_algorithm: Option<String>,
    /// The upload's checksum type, if given.
    pub checksum_type: Option<ChecksumType>,
}

impl ListPartsResult {
    /// The `part-number-marker` of the next page (S5): `Ok(None)` when this page is the last,
    /// `Ok(Some(marker))` when another follows.
    ///
    /// # Errors
    /// [`XmlError::Missing`] when the page says it is truncated but gives no next marker, and
    /// [`XmlError::Invalid`] when that marker does not advance past this page's marker or
    /// leaves no part number to list: following it would never end.
    pub fn next_page_marker(&self) -> Result<Option<u32>, XmlError> {
        const ELEMENT: &str = "NextPartNumberMarker";
        if !self.is_truncated {
            return Ok(None);
        }
        let next = self
            .next_part_number_marker
            .ok_or(XmlError::Missing { element: ELEMENT })?;
        if next <= self.part_number_marker.unwrap_or(0) || next >= MAX_PARTS {
            return Err(XmlError::Invalid { element: ELEMENT });
        }
        Ok(Some(next))
    }
}

fn read_part(part: &Element) -> Result<ListedPart, XmlError> {
    let part_number = part.number::<u32>("PartNumber")?.ok_or(XmlError::Missing {
        element: "PartNumber",
    })?;
    if !(1..=MAX_PARTS).contains(&part_number) {
        return Err(XmlError::Invalid {
            element: "PartNumber",
        });
    }
    Ok(ListedPart {
        part_number,
        etag: part.string("ETag")?,
        size: part.number("Size")?,
        checksums: part.checksums()?,
    })
}

/// Reads one page of ListParts (`ListPartsResult`, S5; moto's `ListPartsResponse` too, S14).
///
/// # Errors
/// [`XmlError`]; [`XmlError::TooManyParts`] past 1,000 parts; [`XmlError::Missing`] or
/// [`XmlError::Invalid`] for a part without a part number in 1–10,000.
pub fn parse_list_parts(body: &[u8]) -> Result<S3Answer<ListPartsResult>, XmlError> {
    // moto 5.2.5 names the root `ListPartsResponse` (S14); the elements are S3's.
    parse_answer_named(body, "ListPartsResult", Some("ListPartsResponse"), |root| {
        let mut parts = Vec::new();
        for part in root.children.iter().filter(|c| c.name == "Part") {
            if parts.len() == MAX_PARTS_PER_PAGE {
                return Err(XmlError::TooManyParts {
                    limit: MAX_PARTS_PER_PAGE,
                });
            }
            parts.push(read_part(part)?);
        }
        Ok(ListPartsResult {
            bucket: root.string("Bucket")?,
            key: root.string("Key")?,
            upload_id: root.string("UploadId")?,
            part_number_marker: root.number("PartNumberMarker")?,
            next_part_number_marker: root.number("NextPartNumberMarker")?,
            max_parts: root.number("MaxParts")?,
            is_truncated: root.boolean("IsTruncated")?.unwrap_or(false),
            parts,
            checksum_algorithm: root.string("ChecksumAlgorithm")?,
            checksum_type: root.checksum_type()?,
        })
    })
}

/// The answer to CompleteMultipartUpload (S6). Every field is optional: the root alone says
/// the object exists; what is missing can be checked with a HEAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompleteMultipartUploadResult {
    /// The object's URL.
    pub location: Option<String>,
    /// The bucket.
    pub bucket: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// The object's ETag, verbatim (for a multipart object, an MD5 of the part MD5s and
    /// `-<parts>`: not a content hash).
    pub etag: Option<String>,
    /// The object's checksums (`ChecksumCRC32C` and others), verbatim.
    pub checksums: Checksums,
    /// The type of those checksums.
    pub checksum_type: Option<ChecksumType>,
}

/// Reads the answer to CompleteMultipartUpload (S6, S7). A `200` whose body is `<Error>` is
/// [`S3Answer::Error`]; a cut or unreadable body is an error that
/// [counts as a transport failure](XmlError::counts_as_transport_failure).
///
/// # Errors
/// [`XmlError`].
pub fn parse_complete_multipart_upload(
    body: &[u8],
) -> Result<S3Answer<CompleteMultipartUploadResult>, XmlError> {
    parse_answer(body, "CompleteMultipartUploadResult", |root| {
        Ok(CompleteMultipartUploadResult {
            location: root.string("Location")?,
            bucket: root.string("Bucket")?,
            key: root.string("Key")?,
            etag: root.string("ETag")?,
            checksums: root.checksums()?,
            checksum_type: root.checksum_type()?,
        })
    })
}

/// Reads the `<Error>` body of a non-2xx answer (S9).
///
/// # Errors
/// [`XmlError`]; [`XmlError::UnexpectedRoot`] when the root is not `Error`.
pub fn parse_error(body: &[u8]) -> Result<S3Error, XmlError> {
    let root = parse_document(body)?;
    if root.name == "Error" {
        Ok(S3Error::read(&root))
    } else {
        Err(XmlError::UnexpectedRoot {
            expected: "Error",
            found: cut_at(&root.name, MAX_QUOTED_NAME).to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors (S9)
// ---------------------------------------------------------------------------------------------

/// An S3 error document: its `Code` and `Message`. The other elements (`RequestId`, `HostId`,
/// `Resource`, and details such as a string to sign) are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Error {
    /// The error code.
    pub code: S3ErrorCode,
    /// The server's message, cut to [`MAX_MESSAGE_LEN`] bytes.
    pub message: Option<String>,
}

impl S3Error {
    /// Reads `Code` and `Message`, leniently: the root alone makes it an error (S7), so a
    /// missing or odd `Code` becomes [`S3ErrorCode::Other`] rather than a parse failure.
    fn read(root: &Element) -> Self {
        let first = |name: &str| root.children.iter().find(|c| c.name == name);
        let code = first("Code").map_or(S3ErrorCode::Other(String::new()), |c| {
            S3ErrorCode::parse(c.text.trim())
        });
        let message = first("Message")
            .map(|m| cut_at(m.text.trim(), MAX_MESSAGE_LEN).to_owned())
            .filter(|m| !m.is_empty());
        S3Error { code, message }
    }

    /// What a client does about this error, answered with `status` (S9, S10). Known codes
    /// decide by themselves; an unknown code is retried on a 5xx and final otherwise.
    pub fn action(&self, status: StatusCode) -> ErrorAction {
        match self.code.action() {
            Some(action) => action,
            None if status.is_server_error() => ErrorAction::Retry,
            None => ErrorAction::Final,
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.as_str();
        let code = if code.is_empty() {
            "no error code"
        } else {
            code
        };
        match &self.message {
            Some(message) => write!(f, "{code}: {message}"),
            None => f.write_str(code),
        }
    }
}

/// What a client does about an S3 error (S9, S10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// Stop with an error: the request is wrong (a client bug) or not allowed.
    Final,
    /// The part's bytes arrived damaged: read the part's range again and resend it.
    ResendPart,
    /// Back off with jitter, then repeat the same request (a part retry is the same PUT).
    Retry,
    /// Like [`Retry`](Self::Retry), and lower the number of requests in flight: the server
    /// asks for fewer requests per second, not only a later one.
    SlowDown,
    /// The upload is gone (aborted, completed or expired): drop its ID and, if the caller
    /// allows, start again. After a Complete that may have succeeded, check the object first
    /// (S7).
    UploadGone,
    /// The request's time is too far from the server's: correct the clock offset from the
    /// response's `Date`, sign again and retry once.
    CorrectClock,
}

/// An S3 error code, classified (S9). Codes are matched exactly, as S3 writes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum S3ErrorCode {
    /// `NoSuchUpload` (404): the upload ID is unknown, aborted or completed.
    NoSuchUpload,
    /// `EntityTooSmall` (400, from Complete): a part but the last is under 5 MiB.
    EntityTooSmall,
    /// `InvalidPart` (400): a listed part or ETag is unknown.
    InvalidPart,
    /// `InvalidPartOrder` (400): the parts are not in ascending order.
    InvalidPartOrder,
    /// `MalformedXML` (400): e.g. an empty part list.
    MalformedXml,
    /// `InvalidArgument` (400): e.g. a part number out of range.
    InvalidArgument,
    /// `InvalidRequest` (400): e.g. a missing part checksum or a wrong `x-amz-mp-object-size`.
    InvalidRequest,
    /// `EntityTooLarge` (400): a part over 5 GiB.
    EntityTooLarge,
    /// `BadDigest` (400): the part's checksum did not match its bytes.
    BadDigest,
    /// `RequestTimeout` (400): the body was not received in time.
    RequestTimeout,
    /// `SignatureDoesNotMatch` (403).
    SignatureDoesNotMatch,
    /// `RequestTimeTooSkewed` (403): the client's clock is off.
    RequestTimeTooSkewed,
    /// `AccessDenied` (403).
    AccessDenied,
    /// `InternalError` (500).
    InternalError,
    /// `SlowDown` (503): too many requests per second on the prefix.
    SlowDown,
    /// `ServiceUnavailable` (503).
    ServiceUnavailable,
    /// Any other code, verbatim (empty when the document had none).
    Other(String),
}

impl S3ErrorCode {
    /// The code for `code` as S3 writes it; unknown codes are kept in
    /// [`Other`](Self::Other), cut to [`MAX_TEXT_LEN`] bytes.
    pub fn parse(code: &str) -> Self {
        match code {
            "NoSuchUpload" => S3ErrorCode::NoSuchUpload,
            "EntityTooSmall" => S3ErrorCode::EntityTooSmall,
            "InvalidPart" => S3ErrorCode::InvalidPart,
            "InvalidPartOrder" => S3ErrorCode::InvalidPartOrder,
            "MalformedXML" => S3ErrorCode::MalformedXml,
            "InvalidArgument" => S3ErrorCode::InvalidArgument,
            "InvalidRequest" => S3ErrorCode::InvalidRequest,
            "EntityTooLarge" => S3ErrorCode::EntityTooLarge,
            "BadDigest" => S3ErrorCode::BadDigest,
            "RequestTimeout" => S3ErrorCode::RequestTimeout,
            "SignatureDoesNotMatch" => S3ErrorCode::SignatureDoesNotMatch,
            "RequestTimeTooSkewed" => S3ErrorCode::RequestTimeTooSkewed,
            "AccessDenied" => S3ErrorCode::AccessDenied,
            "InternalError" => S3ErrorCode::InternalError,
            "SlowDown" => S3ErrorCode::SlowDown,
            "ServiceUnavailable" => S3ErrorCode::ServiceUnavailable,
            other => S3ErrorCode::Other(cut_at(other, MAX_TEXT_LEN).to_owned()),
        }
    }

    /// The code as S3 writes it.
    pub fn as_str(&self) -> &str {
        match self {
            S3ErrorCode::NoSuchUpload => "NoSuchUpload",
            S3ErrorCode::EntityTooSmall => "EntityTooSmall",
            S3ErrorCode::InvalidPart => "InvalidPart",
            S3ErrorCode::InvalidPartOrder => "InvalidPartOrder",
            S3ErrorCode::MalformedXml => "MalformedXML",
            S3ErrorCode::InvalidArgument => "InvalidArgument",
            S3ErrorCode::InvalidRequest => "InvalidRequest",
            S3ErrorCode::EntityTooLarge => "EntityTooLarge",
            S3ErrorCode::BadDigest => "BadDigest",
            S3ErrorCode::RequestTimeout => "RequestTimeout",
            S3ErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            S3ErrorCode::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            S3ErrorCode::AccessDenied => "AccessDenied",
            S3ErrorCode::InternalError => "InternalError",
            S3ErrorCode::SlowDown => "SlowDown",
            S3ErrorCode::ServiceUnavailable => "ServiceUnavailable",
            S3ErrorCode::Other(code) => code,
        }
    }

    /// What a client does about this code (S9, S10); `None` for [`Other`](Self::Other), which
    /// [`S3Error::action`] decides by the status.
    pub fn action(&self) -> Option<ErrorAction> {
        Some(match self {
            S3ErrorCode::NoSuchUpload => ErrorAction::UploadGone,
            S3ErrorCode::EntityTooSmall
            | S3ErrorCode::InvalidPart
            | S3ErrorCode::InvalidPartOrder
            | S3ErrorCode::MalformedXml
            | S3ErrorCode::InvalidArgument
            | S3ErrorCode::InvalidRequest
            | S3ErrorCode::EntityTooLarge
            | S3ErrorCode::SignatureDoesNotMatch
            | S3ErrorCode::AccessDenied => ErrorAction::Final,
            S3ErrorCode::BadDigest => ErrorAction::ResendPart,
            S3ErrorCode::RequestTimeout
            | S3ErrorCode::InternalError
            | S3ErrorCode::ServiceUnavailable => ErrorAction::Retry,
            S3ErrorCode::SlowDown => ErrorAction::SlowDown,
            S3ErrorCode::RequestTimeTooSkewed => ErrorAction::CorrectClock,
            S3ErrorCode::Other(_) => return None,
        })
    }
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// The Complete request body (S6)
// ---------------------------------------------------------------------------------------------

/// A part to list in the Complete body: its number, the ETag its upload answered (verbatim,
/// quotes included) and, when recorded, its CRC32C.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CompletedPart {
    /// The part number, 1–10,000.
    pub part_number: u32,
    /// The ETag from the part's upload answer, verbatim.
    pub etag: String,
    /// The part's CRC32C, if it was sent with the part (required for a `COMPOSITE` upload).
    pub crc32c: Option<u32>,
}

/// Why a Complete body cannot be written. Each is a caller bug that S3 would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompleteBodyError {
    /// No parts: S3 answers an empty list with `MalformedXML` (S6).
    #[error("an upload cannot be completed without parts")]
    NoParts,
    /// More than 10,000 parts.
    #[error("{count} parts are more than the 10,000 an upload can have")]
    TooManyParts {
        /// How many were given.
        count: usize,
    },
    /// A part number outside 1–10,000.
    #[error("part number {part_number} is outside 1 to 10,000")]
    PartNumberOutOfRange {
        /// The part number.
        part_number: u32,
    },
    /// The same part number twice.
    #[error("part {part_number} is listed twice")]
    DuplicatePart {
        /// The part number.
        part_number: u32,
    },
    /// An ETag that is empty or holds control characters, which XML cannot carry faithfully.
    #[error("the ETag of part {part_number} is empty or holds control characters")]
    InvalidEtag {
        /// The part number.
        part_number: u32,
    },
    /// The XML writer failed (it writes to memory, so this is not expected to happen).
    #[error("the request body could not be written")]
    Write,
}

/// Whether XML 1.0 carries `c` unchanged in text (control characters other than tab are
/// either forbidden or normalised away).
fn is_plain_xml_char(c: char) -> bool {
    c == '\t' || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Writes the `CompleteMultipartUpload` request body (S6): one `Part` per part in ascending
/// part number (the order `parts` comes in does not matter), each with `PartNumber`, `ETag`
/// (escaped, its quotes kept) and `ChecksumCRC32C` when recorded, in S3's namespace.
///
/// # Errors
/// [`CompleteBodyError`] for an empty list, more than 10,000 parts, a part number outside
/// 1–10,000 or listed twice, or an unusable ETag.
pub fn complete_multipart_upload_body(
    parts: &[CompletedPart],
) -> Result<Vec<u8>, CompleteBodyError> {
    if parts.is_empty() {
        return Err(CompleteBodyError::NoParts);
    }
    if parts.len() > MAX_PARTS as usize {
        return Err(CompleteBodyError::TooManyParts { count: parts.len() });
    }
    let mut sorted: Vec<&CompletedPart> = parts.iter().collect();
    sorted.sort_by_key(|p| p.part_number);
    for (i, part) in sorted.iter().enumerate() {
        let part_number = part.part_number;
        if !(1..=MAX_PARTS).contains(&part_number) {
            return Err(CompleteBodyError::PartNumberOutOfRange { part_number });
        }
        if i > 0 && sorted[i - 1].part_number == part_number {
            return Err(CompleteBodyError::DuplicatePart { part_number });
        }
        if part.etag.is_empty() || !part.etag.chars().all(is_plain_xml_char) {
            return Err(CompleteBodyError::InvalidEtag { part_number });
        }
    }

    let mut writer = quick_xml::Writer::new(Vec::with_capacity(64 + 120 * sorted.len()));
    writer
        .create_element("CompleteMultipartUpload")
        .with_attribute(("xmlns", S3_NAMESPACE))
        .write_inner_content(|w| {
            for part in &sorted {
                w.create_element("Part").write_inner_content(|w| {
                    let number = part.part_number.to_string();
                    w.create_element("PartNumber")
                        .write_text_content(BytesText::new(&number))?;
                    // `<`, `>` and `&` escaped; the quotes stay as they are, as S3 shows them.
                    w.create_element("ETag")
                        .write_text_content(BytesText::from_escaped(partial_escape(
                            part.etag.as_str(),
                        )))?;
                    if let Some(crc) = part.crc32c {
                        w.create_element(ChecksumAlgorithm::Crc32c.xml_element())
                            .write_text_content(BytesText::new(&part_crc32c(crc)))?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })
        .map_err(|_| CompleteBodyError::Write)?;
    Ok(writer.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multipart::checksum::{composite_crc32c, parse_crc32c};
    use proptest::prelude::*;

    fn success<T: fmt::Debug>(answer: Result<S3Answer<T>, XmlError>) -> T {
        match answer {
            Ok(S3Answer::Success(t)) => t,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    fn error<T: fmt::Debug>(answer: Result<S3Answer<T>, XmlError>) -> S3Error {
        match answer {
            Ok(S3Answer::Error(e)) => e,
            other => panic!("expected an error document, got {other:?}"),
        }
    }

    // -- S2: CreateMultipartUpload -------------------------------------------------------------

    /// Shaped like the S3 API Reference example.
    const INITIATE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
   <Bucket>example-bucket</Bucket>
   <Key>example-object</Key>
   <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
</InitiateMultipartUploadResult>"#;

    #[test]
    fn s2_initiate_result_gives_the_upload_id() {
        let result = success(parse_initiate_multipart_upload(INITIATE.as_bytes()));
        assert_eq!(
            result,
            InitiateMultipartUploadResult {
                bucket: Some("example-bucket".into()),
                key: Some("example-object".into()),
                upload_id: "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA".into(),
            }
        );
    }

    #[test]
    fn s2_namespace_present_absent_other_or_prefixed_reads_the_same() {
        let expected = success(parse_initiate_multipart_upload(INITIATE.as_bytes()));
        let bare = INITIATE.replace(r#" xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#, "");
        // moto writes some documents in this namespace; GCS's XML API uses its own.
        let other = INITIATE.replace(
            "http://s3.amazonaws.com/doc/2006-03-01/",
            "http://doc.s3.amazonaws.com/2006-03-01",
        );
        let prefixed = INITIATE
            .replace("xmlns=", "xmlns:s3=")
            .replace("<", "<s3:")
            .replace("<s3:/", "</s3:")
            .replace("<s3:?xml", "<?xml");
        assert!(prefixed.contains("<s3:UploadId>"), "{prefixed}");
        for body in [bare, other, prefixed] {
            assert_eq!(
                success(parse_initiate_multipart_upload(body.as_bytes())),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn s2_moto_initiate_answer_is_read() {
        // moto 5.2.5's template, rendered (S14).
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult \
            xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n  <Bucket>b</Bucket>\n  \
            <Key>dir/a &amp; b.bin</Key>\n  <UploadId>\
            ZWE5ZjNlYjUtYzQ3Ni00ZTU2LTk1YzMtNWJhN2M0YjE3NjY4</UploadId>\n\
            </InitiateMultipartUploadResult>";
        let result = success(parse_initiate_multipart_upload(body.as_bytes()));
        assert_eq!(result.key.as_deref(), Some("dir/a & b.bin"));
        assert_eq!(
            result.upload_id,
            "ZWE5ZjNlYjUtYzQ3Ni00ZTU2LTk1YzMtNWJhN2M0YjE3NjY4"
        );
    }

    #[test]
    fn s2_initiate_without_an_upload_id_is_refused() {
        for body in [
            "<InitiateMultipartUploadResult><Bucket>b</Bucket></InitiateMultipartUploadResult>",
            "<InitiateMultipartUploadResult><UploadId/></InitiateMultipartUploadResult>",
            "<InitiateMultipartUploadResult><UploadId></UploadId></InitiateMultipartUploadResult>",
        ] {
            assert_eq!(
                parse_initiate_multipart_upload(body.as_bytes()),
                Err(XmlError::Missing {
                    element: "UploadId"
                }),
                "{body}"
            );
        }
        let twice = "<InitiateMultipartUploadResult><UploadId>a</UploadId><UploadId>b</UploadId>\
                     </InitiateMultipartUploadResult>";
        assert_eq!(
            parse_initiate_multipart_upload(twice.as_bytes()),
            Err(XmlError::Duplicate {
                element: "UploadId"
            })
        );
        let nested = "<InitiateMultipartUploadResult><UploadId><x/></UploadId>\
                      </InitiateMultipartUploadResult>";
        assert_eq!(
            parse_initiate_multipart_upload(nested.as_bytes()),
            Err(XmlError::Invalid {
                element: "UploadId"
            })
        );
    }

    #[test]
    fn s2_references_and_cdata_are_decoded() {
        let body = "<InitiateMultipartUploadResult><Key>a&lt;&#x42;&#67;&gt;<![CDATA[&d]]>\
                    </Key><UploadId>u</UploadId></InitiateMultipartUploadResult>";
        let result = success(parse_initiate_multipart_upload(body.as_bytes()));
        assert_eq!(result.key.as_deref(), Some("a<BC>&d"));
    }

    #[test]
    fn s2_an_error_document_from_create_is_an_error_answer() {
        let body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let e = error(parse_initiate_multipart_upload(body.as_bytes()));
        assert_eq!(e.code, S3ErrorCode::AccessDenied);
        assert_eq!(e.action(StatusCode::FORBIDDEN), ErrorAction::Final);
    }

    #[test]
    fn s2_another_root_is_unexpected() {
        assert_eq!(
            parse_initiate_multipart_upload(b"<ListPartsResult/>"),
            Err(XmlError::UnexpectedRoot {
                expected: "InitiateMultipartUploadResult",
                found: "ListPartsResult".into()
            })
        );
        let long = format!("<{}/>", "A".repeat(500));
        match parse_initiate_multipart_upload(long.as_bytes()) {
            Err(XmlError::UnexpectedRoot { found, .. }) => assert_eq!(found.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    // -- S5: ListParts -------------------------------------------------------------------------

    /// Shaped like the S3 API Reference example (quotes in the ETag written both ways).
    const LIST_PARTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId>
  <Initiator>
      <ID>arn:aws:iam::111122223333:user/some-user-11116a31-17b5-4fb7-9df5-b288870f11xx</ID>
      <DisplayName>umat-user-11116a31-17b5-4fb7-9df5-b288870f11xx</DisplayName>
  </Initiator>
  <Owner>
    <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
    <DisplayName>someName</DisplayName>
  </Owner>
  <StorageClass>STANDARD</StorageClass>
  <PartNumberMarker>1</PartNumberMarker>
  <NextPartNumberMarker>3</NextPartNumberMarker>
  <MaxParts>2</MaxParts>
  <IsTruncated>true</IsTruncated>
  <ChecksumAlgorithm>CRC32C</ChecksumAlgorithm>
  <ChecksumType>COMPOSITE</ChecksumType>
  <Part>
    <PartNumber>2</PartNumber>
    <LastModified>2010-11-10T20:48:34.000Z</LastModified>
    <ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag>
    <Size>10485760</Size>
    <ChecksumCRC32C>ipE2qg==</ChecksumCRC32C>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <LastModified>2010-11-10T20:48:33.000Z</LastModified>
    <ETag>&quot;aaaa18db4cc2f85cedef654fccc4a4x8&quot;</ETag>
    <Size>10485760</Size>
  </Part>
</ListPartsResult>"#;

    #[test]
    fn s5_list_parts_page_is_read_with_etags_verbatim() {
        let page = success(parse_list_parts(LIST_PARTS.as_bytes()));
        assert_eq!(page.bucket.as_deref(), Some("example-bucket"));
        assert_eq!(
            page.upload_id.as_deref(),
            Some("XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA")
        );
        assert_eq!(page.part_number_marker, Some(1));
        assert_eq!(page.next_part_number_marker, Some(3));
        assert_eq!(page.max_parts, Some(2));
        assert!(page.is_truncated);
        assert_eq!(page.checksum_algorithm.as_deref(), Some("CRC32C"));
        assert_eq!(page.checksum_type, Some(ChecksumType::Composite));
        assert_eq!(page.parts.len(), 2);
        let (a, b) = (&page.parts[0], &page.parts[1]);
        assert_eq!(a.part_number, 2);
        assert_eq!(
            a.etag.as_deref(),
            Some("\"7778aef83f66abc1fa1e8477f296d394\"")
        );
        assert_eq!(a.size, Some(10_485_760));
        assert_eq!(a.checksums.crc32c(), Some("ipE2qg=="));
        assert_eq!(
            a.checksums.iter().collect::<Vec<_>>(),
            [(ChecksumAlgorithm::Crc32c, "ipE2qg==")]
        );
        assert_eq!(
            parse_crc32c(a.checksums.crc32c().unwrap()).map(|v| v.crc32c),
            Some(crc32c::crc32c(&[0u8; 32]))
        );
        assert_eq!(b.part_number, 3);
        assert_eq!(
            b.etag.as_deref(),
            Some("\"aaaa18db4cc2f85cedef654fccc4a4x8\"")
        );
        assert!(b.checksums.is_empty());
        assert_eq!(page.next_page_marker(), Ok(Some(3)));
    }

    /// moto 5.2.5's ListParts template, rendered for parts 1 and 2 of a two-part upload (S14).
    fn moto_list_parts(marker: &str, next: &str, truncated: &str, parts: &[(u32, u64)]) -> String {
        let mut body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n  <Bucket>b</Bucket>\n  \
             <Key>k</Key>\n  <UploadId>u</UploadId>\n  <StorageClass>STANDARD</StorageClass>\n  \
             <Initiator>\n    <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a\
             </ID>\n    <DisplayName>webfile</DisplayName>\n  </Initiator>\n  <Owner>\n    \
             <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>\n    \
             <DisplayName>webfile</DisplayName>\n  </Owner>\n  \
             <PartNumberMarker>{marker}</PartNumberMarker>\n  \
             <NextPartNumberMarker>{next}</NextPartNumberMarker>\n  \
             <MaxParts>1000</MaxParts>\n  <IsTruncated>{truncated}</IsTruncated>\n"
        );
        for (n, size) in parts {
            body.push_str(&format!(
                "  \n  <Part>\n    <PartNumber>{n}</PartNumber>\n    \
                 <LastModified>2026-12-02T10:00:00.000Z</LastModified>\n    \
                 <ETag>\"{n:032x}\"</ETag>\n    <Size>{size}</Size>\n  </Part>\n"
            ));
        }
        body.push_str("  \n</ListPartsResult>");
        body
    }

    #[test]
    fn s14_moto_list_parts_answer_is_read() {
        let body = moto_list_parts("0", "2", "false", &[(1, 5_242_880), (2, 17)]);
        let page = success(parse_list_parts(body.as_bytes()));
        assert_eq!(page.part_number_marker, Some(0));
        assert!(!page.is_truncated);
        assert_eq!(page.next_page_marker(), Ok(None));
        let listed: Vec<_> = page
            .parts
            .iter()
            .map(|p| (p.part_number, p.size, p.etag.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (1, Some(5_242_880), Some(format!("\"{:032x}\"", 1))),
                (2, Some(17), Some(format!("\"{:032x}\"", 2)))
            ]
        );
        // An empty upload: moto writes marker 0 and no parts.
        let empty = success(parse_list_parts(
            moto_list_parts("0", "0", "false", &[]).as_bytes(),
        ));
        assert!(empty.parts.is_empty());
    }

    #[test]
    fn s5_next_page_marker_must_advance() {
        let page = |marker: &str, next: &str, truncated: &str| {
            success(parse_list_parts(
                moto_list_parts(marker, next, truncated, &[(1, 1)]).as_bytes(),
            ))
        };
        assert_eq!(page("0", "1", "true").next_page_marker(), Ok(Some(1)));
        assert_eq!(page("", "1", "true").next_page_marker(), Ok(Some(1)));
        assert_eq!(page("5", "5", "false").next_page_marker(), Ok(None));
        let invalid = Err(XmlError::Invalid {
            element: "NextPartNumberMarker",
        });
        assert_eq!(page("5", "5", "true").next_page_marker(), invalid);
        assert_eq!(page("5", "4", "true").next_page_marker(), invalid);
        assert_eq!(page("9999", "10000", "true").next_page_marker(), invalid);
        assert_eq!(
            page("0", "", "true").next_page_marker(),
            Err(XmlError::Missing {
                element: "NextPartNumberMarker"
            })
        );
    }

    #[test]
    fn s5_booleans_and_numbers_are_strict() {
        for (value, expected) in [
            ("true", true),
            ("false", false),
            ("1", true),
            (" 0 ", false),
        ] {
            let body = moto_list_parts("0", "0", value, &[]);
            assert_eq!(
                success(parse_list_parts(body.as_bytes())).is_truncated,
                expected
            );
        }
        let body = moto_list_parts("0", "0", "yes", &[]);
        assert_eq!(
            parse_list_parts(body.as_bytes()),
            Err(XmlError::Invalid {
                element: "IsTruncated"
            })
        );
        for marker in ["-1", "+1", "1.0", "x", "99999999999"] {
            let body = moto_list_parts(marker, "0", "false", &[]);
            assert_eq!(
                parse_list_parts(body.as_bytes()),
                Err(XmlError::Invalid {
                    element: "PartNumberMarker"
                }),
                "{marker}"
            );
        }
        let body = moto_list_parts("0", "0", "false", &[(1, 1)])
            .replace("<Size>1</Size>", "<Size>99999999999999999999</Size>");
        assert_eq!(
            parse_list_parts(body.as_bytes()),
            Err(XmlError::Invalid { element: "Size" })
        );
    }

    #[test]
    fn s5_part_numbers_outside_1_to_10000_are_refused() {
        for n in [0, 10_001] {
            let body = moto_list_parts("0", "0", "false", &[(n, 1)]);
            assert_eq!(
                parse_list_parts(body.as_bytes()),
                Err(XmlError::Invalid {
                    element: "PartNumber"
                }),
                "{n}"
            );
        }
        let body = moto_list_parts("0", "0", "false", &[(10_000, 1)]);
        assert_eq!(
            success(parse_list_parts(body.as_bytes())).parts[0].part_number,
            10_000
        );
        let body = "<ListPartsResult><Part><Size>1</Size></Part></ListPartsResult>";
        assert_eq!(
            parse_list_parts(body.as_bytes()),
            Err(XmlError::Missing {
                element: "PartNumber"
            })
        );
    }

    #[test]
    fn s5_a_part_without_etag_or_size_is_listed_as_such() {
        // s3s-fs lists no ETags.
        let body = "<ListPartsResult><IsTruncated>false</IsTruncated>\
                    <Part><PartNumber>4</PartNumber></Part></ListPartsResult>";
        let page = success(parse_list_parts(body.as_bytes()));
        assert_eq!(
            page.parts,
            [ListedPart {
                part_number: 4,
                etag: None,
                size: None,
                checksums: Checksums::default()
            }]
        );
    }

    #[test]
    fn s5_at_most_1000_parts_per_page() {
        let parts: Vec<(u32, u64)> = (1..=1000).map(|n| (n, 5_242_880)).collect();
        let body = moto_list_parts("0", "1000", "true", &parts);
        let page = success(parse_list_parts(body.as_bytes()));
        assert_eq!(page.parts.len(), 1000);
        assert_eq!(page.next_page_marker(), Ok(Some(1000)));
        let parts: Vec<(u32, u64)> = (1..=1001).map(|n| (n, 5_242_880)).collect();
        let body = moto_list_parts("0", "1001", "true", &parts);
        assert_eq!(
            parse_list_parts(body.as_bytes()),
            Err(XmlError::TooManyParts { limit: 1000 })
        );
    }

    #[test]
    fn s5_every_checksum_element_is_kept() {
        let mut body = String::from("<ListPartsResult><Part><PartNumber>1</PartNumber>");
        for a in ChecksumAlgorithm::ALL {
            body.push_str(&format!("<{0}>v-{1}</{0}>", a.xml_element(), a.as_str()));
        }
        body.push_str("</Part></ListPartsResult>");
        let page = success(parse_list_parts(body.as_bytes()));
        let checksums = &page.parts[0].checksums;
        for a in ChecksumAlgorithm::ALL {
            assert_eq!(checksums.get(a), Some(format!("v-{}", a.as_str()).as_str()));
        }
        assert_eq!(checksums.iter().count(), ChecksumAlgorithm::ALL.len());
    }

    // -- S6: Complete body ---------------------------------------------------------------------

    #[test]
    fn s6_complete_body_lists_parts_in_ascending_order() {
        let crc = crc32c::crc32c(b"part two");
        let parts = [
            CompletedPart {
                part_number: 2,
                etag: "\"b\"".into(),
                crc32c: Some(crc),
            },
            CompletedPart {
                part_number: 1,
                etag: "\"a\"".into(),
                crc32c: None,
            },
        ];
        let body = complete_multipart_upload_body(&parts).unwrap();
        let expected = format!(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>\"b\"</ETag>\
             <ChecksumCRC32C>{}</ChecksumCRC32C></Part>\
             </CompleteMultipartUpload>",
            part_crc32c(crc)
        );
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }

    #[test]
    fn s6_complete_body_escapes_etags_and_reads_back_verbatim() {
        let etags = ["\"x&y<z>\"", "W/\"weak\"", "'single' \t tab", "\"ünïcødé\""];
        let parts: Vec<CompletedPart> = etags
            .iter()
            .zip(1..)
            .map(|(e, n)| CompletedPart {
                part_number: n,
                etag: (*e).into(),
                crc32c: Some(n),
            })
            .collect();
        let body = complete_multipart_upload_body(&parts).unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains("<ETag>\"x&amp;y&lt;z&gt;\"</ETag>"), "{text}");
        let root = parse_document(&body).unwrap();
        assert_eq!(root.name, "CompleteMultipartUpload");
        let read: Vec<(u32, String, Option<String>)> = root
            .children
            .iter()
            .map(|p| {
                (
                    p.number("PartNumber").unwrap().unwrap(),
                    p.string("ETag").unwrap().unwrap(),
                    p.string("ChecksumCRC32C").unwrap(),
                )
            })
            .collect();
        let expected: Vec<_> = parts
            .iter()
            .map(|p| (p.part_number, p.etag.clone(), p.crc32c.map(part_crc32c)))
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn s6_complete_body_refuses_what_s3_would_refuse() {
        let part = |n: u32, etag: &str| CompletedPart {
            part_number: n,
            etag: etag.into(),
            crc32c: None,
        };
        assert_eq!(
            complete_multipart_upload_body(&[]),
            Err(CompleteBodyError::NoParts)
        );
        assert_eq!(
            complete_multipart_upload_body(&[part(3, "a"), part(1, "b"), part(3, "c")]),
            Err(CompleteBodyError::DuplicatePart { part_number: 3 })
        );
        for n in [0, 10_001, u32::MAX] {
            assert_eq!(
                complete_multipart_upload_body(&[part(1, "a"), part(n, "b")]),
                Err(CompleteBodyError::PartNumberOutOfRange { part_number: n })
            );
        }
        for etag in ["", "\"a\r\"", "a\nb", "\u{0}", "\u{FFFF}"] {
            assert_eq!(
                complete_multipart_upload_body(&[part(7, etag)]),
                Err(CompleteBodyError::InvalidEtag { part_number: 7 }),
                "{etag:?}"
            );
        }
        let many: Vec<CompletedPart> = (1..=10_001).map(|n| part(n, "e")).collect();
        assert_eq!(
            complete_multipart_upload_body(&many),
            Err(CompleteBodyError::TooManyParts { count: 10_001 })
        );
        let body = complete_multipart_upload_body(&many[..10_000]).unwrap();
        let root = parse_document(&body).unwrap();
        assert_eq!(root.children.len(), 10_000);
        assert!(body.len() < MAX_BODY_LEN);
    }

    // -- S6, S7: Complete answer ---------------------------------------------------------------

    /// Shaped like the S3 API Reference example, with a COMPOSITE CRC32C.
    fn complete_answer() -> String {
        let composite = composite_crc32c(&[1, 2, 3]);
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Location>https://example-bucket.s3.us-east-1.amazonaws.com/a%20%26%20b</Location>
  <Bucket>example-bucket</Bucket>
  <Key>a &amp; b</Key>
  <ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag>
  <ChecksumCRC32C>{composite}</ChecksumCRC32C>
  <ChecksumType>COMPOSITE</ChecksumType>
</CompleteMultipartUploadResult>
"#
        )
    }

    #[test]
    fn s6_complete_result_is_read() {
        let result = success(parse_complete_multipart_upload(
            complete_answer().as_bytes(),
        ));
        assert_eq!(
            result.location.as_deref(),
            Some("https://example-bucket.s3.us-east-1.amazonaws.com/a%20%26%20b")
        );
        assert_eq!(result.key.as_deref(), Some("a & b"));
        assert_eq!(
            result.etag.as_deref(),
            Some("\"3858f62230ac3c915f300c664312c11f-9\"")
        );
        assert_eq!(result.checksum_type, Some(ChecksumType::Composite));
        let value = parse_crc32c(result.checksums.crc32c().unwrap()).unwrap();
        assert_eq!(value.parts, Some(3));
        assert_eq!(
            result.checksums.crc32c(),
            Some(composite_crc32c(&[1, 2, 3]).as_str())
        );
    }

    #[test]
    fn s14_moto_complete_answer_is_read() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult \
                    xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n  \
                    <Location>http://b.s3.amazonaws.com/k</Location>\n  <Bucket>b</Bucket>\n  \
                    <Key>k</Key>\n  <ETag>\"0ba7b4b5e3bb2d5ba4bb4cf2c5d5e2a5-2\"</ETag>\n\
                    </CompleteMultipartUploadResult>\n";
        let result = success(parse_complete_multipart_upload(body.as_bytes()));
        assert_eq!(
            result.etag.as_deref(),
            Some("\"0ba7b4b5e3bb2d5ba4bb4cf2c5d5e2a5-2\"")
        );
        assert!(result.checksums.is_empty());
        assert_eq!(result.checksum_type, None);
    }

    #[test]
    fn s7_whitespace_before_the_document_is_fine() {
        let answer = complete_answer();
        let expected = success(parse_complete_multipart_upload(answer.as_bytes()));
        // Whitespace sent while assembling, before the declaration or after it.
        let before = format!("{}{answer}", " \n\r\t".repeat(500));
        let (decl, rest) = answer.split_once('\n').unwrap();
        let after = format!("{decl}\n{}{rest}", "  \n".repeat(500));
        for body in [before, after] {
            assert_eq!(
                success(parse_complete_multipart_upload(body.as_bytes())),
                expected
            );
        }
    }

    #[test]
    fn s7_an_error_inside_a_200_is_an_error() {
        let body = format!(
            "{}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
             <Message>We encountered an internal error. Please try again.</Message>\
             <RequestId>656c76696e6727732072657175657374</RequestId>\
             <HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>",
            " ".repeat(64)
        );
        let e = error(parse_complete_multipart_upload(body.as_bytes()));
        assert_eq!(e.code, S3ErrorCode::InternalError);
        assert_eq!(
            e.message.as_deref(),
            Some("We encountered an internal error. Please try again.")
        );
        assert_eq!(e.action(StatusCode::OK), ErrorAction::Retry);
    }

    #[test]
    fn s7_every_cut_of_the_answer_counts_as_a_transport_failure() {
        let answer = complete_answer();
        let document_end = answer.trim_end().len();
        for cut in 0..document_end {
            let result = parse_complete_multipart_upload(&answer.as_bytes()[..cut]);
            match result {
                Err(e) if e.counts_as_transport_failure() => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert_eq!(
            parse_complete_multipart_upload(b""),
            Err(XmlError::Truncated)
        );
        assert_eq!(
            parse_complete_multipart_upload(b"   \n  "),
            Err(XmlError::Truncated)
        );
        assert_eq!(
            parse_complete_multipart_upload(b"<?xml version=\"1.0\"?>\n   "),
            Err(XmlError::Truncated)
        );
        assert_eq!(
            parse_complete_multipart_upload(b"<CompleteMultipartUploadResult><ETag>\"x"),
            Err(XmlError::Truncated)
        );
        assert_eq!(
            parse_complete_multipart_upload(b"<CompleteMultipartUploadResult><ET"),
            Err(XmlError::Truncated)
        );
    }

    #[test]
    fn s7_unparsable_bodies_are_malformed() {
        for body in [
            &b"Bad Gateway"[..],
            b"<a></b>",
            b"<a/><b/>",
            b"<a/>trailing",
            b"</a>",
            b"<a>&unknown;</a>",
            b"<a>& alone</a>",
            b"<a>&#0;</a>",
            b"<a>\xff\xfe</a>",
            b"<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>",
            b"text<a/>",
        ] {
            let result = parse_complete_multipart_upload(body);
            assert_eq!(
                result,
                Err(XmlError::Malformed),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(result.unwrap_err().counts_as_transport_failure());
        }
        // Comments and processing instructions around the root are fine.
        let body = format!("<!-- c -->{}<?pi x?><!-- d -->\n", complete_answer());
        assert!(matches!(
            parse_complete_multipart_upload(body.as_bytes()),
            Ok(S3Answer::Success(_))
        ));
        // Semantic errors are not transport failures.
        assert!(
            !XmlError::Missing {
                element: "UploadId"
            }
            .counts_as_transport_failure()
        );
        assert!(
            !XmlError::UnexpectedRoot {
                expected: "Error",
                found: "html".into()
            }
            .counts_as_transport_failure()
        );
    }

    // -- S9: errors ----------------------------------------------------------------------------

    #[test]
    fn s9_error_document_keeps_code_and_message_only() {
        // Shaped like S3's SignatureDoesNotMatch, whose details repeat what was signed.
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\
                    <Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match the signature \
                    you provided. Check your key and signing method.</Message>\
                    <AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>\
                    <StringToSign>AWS4-HMAC-SHA256\n20261202T000000Z</StringToSign>\
                    <SignatureProvided>deadbeef</SignatureProvided>\
                    <CanonicalRequest>PUT\n/k</CanonicalRequest>\
                    <RequestId>4442587FB7D0A2F9</RequestId><HostId>host</HostId></Error>";
        let e = parse_error(body.as_bytes()).unwrap();
        assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
        assert!(
            e.message
                .as_deref()
                .unwrap()
                .starts_with("The request signature")
        );
        let shown = format!("{e:?} {e}");
        for detail in [
            "AKIAIOSFODNN7EXAMPLE",
            "AWS4-HMAC",
            "deadbeef",
            "4442587FB7D0A2F9",
        ] {
            assert!(!shown.contains(detail), "{shown}");
        }
        assert_eq!(e.action(StatusCode::FORBIDDEN), ErrorAction::Final);
    }

    #[test]
    fn s14_moto_no_such_upload_error_is_read() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n    \
                    <Code>NoSuchUpload</Code>\n    <Message>The specified upload does not \
                    exist. The upload ID may be invalid, or the upload may have been aborted or \
                    completed.</Message>\n    <UploadId>u</UploadId>\n    \
                    <RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId>\n</Error>";
        let e = parse_error(body.as_bytes()).unwrap();
        assert_eq!(e.code, S3ErrorCode::NoSuchUpload);
        assert_eq!(e.action(StatusCode::NOT_FOUND), ErrorAction::UploadGone);
        assert!(
            e.to_string()
                .starts_with("NoSuchUpload: The specified upload")
        );
    }

    #[test]
    fn s9_every_code_is_classified() {
        use ErrorAction::*;
        let table = [
            ("NoSuchUpload", S3ErrorCode::NoSuchUpload, UploadGone),
            ("EntityTooSmall", S3ErrorCode::EntityTooSmall, Final),
            ("InvalidPart", S3ErrorCode::InvalidPart, Final),
            ("InvalidPartOrder", S3ErrorCode::InvalidPartOrder, Final),
            ("MalformedXML", S3ErrorCode::MalformedXml, Final),
            ("InvalidArgument", S3ErrorCode::InvalidArgument, Final),
            ("InvalidRequest", S3ErrorCode::InvalidRequest, Final),
            ("EntityTooLarge", S3ErrorCode::EntityTooLarge, Final),
            ("BadDigest", S3ErrorCode::BadDigest, ResendPart),
            ("RequestTimeout", S3ErrorCode::RequestTimeout, Retry),
            (
                "SignatureDoesNotMatch",
                S3ErrorCode::SignatureDoesNotMatch,
                Final,
            ),
            (
                "RequestTimeTooSkewed",
                S3ErrorCode::RequestTimeTooSkewed,
                CorrectClock,
            ),
            ("AccessDenied", S3ErrorCode::AccessDenied, Final),
            ("InternalError", S3ErrorCode::InternalError, Retry),
            ("SlowDown", S3ErrorCode::SlowDown, SlowDown),
            ("ServiceUnavailable", S3ErrorCode::ServiceUnavailable, Retry),
        ];
        for (text, code, action) in table {
            assert_eq!(S3ErrorCode::parse(text), code);
            assert_eq!(code.as_str(), text);
            assert_eq!(code.action(), Some(action), "{text}");
            // A known code decides whatever the status.
            let e = S3Error {
                code,
                message: None,
            };
            assert_eq!(e.action(StatusCode::OK), action);
            assert_eq!(e.action(StatusCode::BAD_GATEWAY), action);
            let body = format!("<Error><Code>{text}</Code></Error>");
            assert_eq!(parse_error(body.as_bytes()).unwrap().code.as_str(), text);
        }
    }

    #[test]
    fn s9_unknown_codes_are_kept_and_decided_by_status() {
        let e =
            parse_error(b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>").unwrap();
        assert_eq!(e.code, S3ErrorCode::Other("NoSuchKey".into()));
        assert_eq!(e.code.action(), None);
        assert_eq!(e.action(StatusCode::NOT_FOUND), ErrorAction::Final);
        assert_eq!(e.action(StatusCode::OK), ErrorAction::Final);
        assert_eq!(
            e.action(StatusCode::INTERNAL_SERVER_ERROR),
            ErrorAction::Retry
        );
        assert_eq!(
            e.action(StatusCode::SERVICE_UNAVAILABLE),
            ErrorAction::Retry
        );
        // Codes are exact: another case is another code.
        assert_eq!(
            S3ErrorCode::parse("nosuchupload"),
            S3ErrorCode::Other("nosuchupload".into())
        );
        // No code at all still makes an error (the root decides, S7).
        let e = parse_error(b"<Error/>").unwrap();
        assert_eq!(e.code, S3ErrorCode::Other(String::new()));
        assert_eq!(e.message, None);
        assert_eq!(e.to_string(), "no error code");
    }

    #[test]
    fn s9_long_messages_are_cut_at_a_character_boundary() {
        let message = "é".repeat(MAX_MESSAGE_LEN); // two bytes each
        let body =
            format!("<Error><Code>InvalidRequest</Code><Message>{message}</Message></Error>");
        let e = parse_error(body.as_bytes()).unwrap();
        let kept = e.message.unwrap();
        assert_eq!(kept.len(), MAX_MESSAGE_LEN);
        assert!(message.starts_with(&kept));
        // Cut at an odd limit: the boundary moves back a byte.
        assert_eq!(cut_at("aé", 2), "a");
    }

    #[test]
    fn s9_parse_error_wants_an_error_root() {
        assert_eq!(
            parse_error(b"<html><body>Bad Gateway</body></html>"),
            Err(XmlError::UnexpectedRoot {
                expected: "Error",
                found: "html".into()
            })
        );
    }

    // -- Bounds --------------------------------------------------------------------------------

    #[test]
    fn hostile_answers_hit_typed_limits() {
        let huge = vec![b' '; MAX_BODY_LEN + 1];
        assert_eq!(
            parse_error(&huge),
            Err(XmlError::TooLarge {
                limit: MAX_BODY_LEN
            })
        );
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            parse_error(deep.as_bytes()),
            Err(XmlError::TooDeep { limit: MAX_DEPTH })
        );
        let ok_depth = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse_document(ok_depth.as_bytes()).is_ok());
        let wide = format!("<Error>{}</Error>", "<b/>".repeat(MAX_ELEMENTS));
        assert_eq!(
            parse_error(wide.as_bytes()),
            Err(XmlError::TooManyElements {
                limit: MAX_ELEMENTS
            })
        );
        let long_id = format!(
            "<InitiateMultipartUploadResult><UploadId>{}</UploadId>\
             </InitiateMultipartUploadResult>",
            "u".repeat(MAX_TEXT_LEN + 1)
        );
        assert_eq!(
            parse_initiate_multipart_upload(long_id.as_bytes()),
            Err(XmlError::TooLong {
                element: "UploadId",
                limit: MAX_TEXT_LEN
            })
        );
        // Long text in an element nobody reads is cut, not refused, and kept bounded.
        let long_other = format!(
            "<InitiateMultipartUploadResult><Other>{}</Other><UploadId>u</UploadId>\
             </InitiateMultipartUploadResult>",
            "&amp;".repeat(100_000)
        );
        let root = parse_document(long_other.as_bytes()).unwrap();
        assert_eq!(root.children[0].text.len(), MAX_TEXT_LEN);
        assert!(root.children[0].cut);
        assert!(parse_initiate_multipart_upload(long_other.as_bytes()).is_ok());
    }

    proptest! {
        // Any bytes, and any mutation of a real answer: a result or a typed error, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_initiate_multipart_upload(&body);
            let _ = parse_list_parts(&body);
            let _ = parse_complete_multipart_upload(&body);
            let _ = parse_error(&body);
        }

        #[test]
        fn mutated_answers_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                       cut in any::<prop::sample::Index>()) {
            let mut body = LIST_PARTS.as_bytes().to_vec();
            let i = at.index(body.len());
            body[i] = byte;
            body.truncate(cut.index(body.len() + 1));
            if let Ok(S3Answer::Success(page)) = parse_list_parts(&body) {
                prop_assert!(page.parts.len() <= MAX_PARTS_PER_PAGE);
                let _ = page.next_page_marker();
            }
        }
    }

    // S14: moto 5.2.5 answers ListParts with the root `ListPartsResponse` and no part
    // checksums; the page reads the same.
    #[test]
    fn s5_s14_motos_list_parts_response_root_is_read() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<ListPartsResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>U</UploadId><PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>1</NextPartNumberMarker><MaxParts>1000</MaxParts><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><ETag>"336311a016184326ddbdd61edd4eeb52"</ETag><Size>10</Size></Part></ListPartsResponse>"#;
        let S3Answer::Success(page) = parse_list_parts(body).unwrap() else {
            panic!("not a page")
        };
        assert_eq!(page.parts.len(), 1);
        assert_eq!(page.parts[0].size, Some(10));
        assert!(page.parts[0].checksums.is_empty());
        assert_eq!(page.next_page_marker(), Ok(None));
        // Other roots are still refused.
        assert!(matches!(
            parse_list_parts(b"<ListPartsReply/>"),
            Err(XmlError::UnexpectedRoot { .. })
        ));
    }
}
