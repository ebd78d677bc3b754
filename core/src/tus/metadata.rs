//! tus header fields: `Upload-Metadata` (U7), the plain-decimal `Upload-Offset`,
//! `Upload-Length` and `Tus-Max-Size` (U2–U4, U6), and the comma lists `Tus-Version`,
//! `Tus-Extension` and `Tus-Checksum-Algorithm` a server announces on `OPTIONS` (U2).
//!
//! tus predates structured fields: its numbers are plain decimals (no fifteen-digit limit, no
//! parameters) and its lists are RFC 9110 comma lists of tokens.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::UsageError;
use crate::range::parse_decimal;

/// `Upload-Metadata`: the upload's key/value pairs, values in base64 (U7).
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
/// `Upload-Offset`: the offset a PATCH starts at, and on a response the bytes held (U3, U4).
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
/// `Upload-Length`: the size of the whole upload (U3, U6).
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
/// `Tus-Max-Size`: the largest upload the server takes, in bytes (U2).
pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
/// `Tus-Version`: the protocol versions the server supports, most preferred first (U1, U2).
pub const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
/// `Tus-Extension`: the extensions the server supports (U2).
pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
/// `Tus-Checksum-Algorithm`: the checksum algorithms the server supports (U2, U11).
pub const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");

// -------------------------------------------------------------------------------------------
// Upload-Metadata
// -------------------------------------------------------------------------------------------

/// A metadata key the protocol does not allow (U7). Names the pair by its place (`index`,
/// from 0) and says why; never contains a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The key is empty.
    #[error("metadata key number {} is empty", .index + 1)]
    EmptyKey {
        /// Which pair.
        index: usize,
    },
    /// The key contains a space (it separates key from value).
    #[error("metadata key number {} contains a space", .index + 1)]
    KeyHasSpace {
        /// Which pair.
        index: usize,
    },
    /// The key contains a comma (it separates the pairs).
    #[error("metadata key number {} contains a comma", .index + 1)]
    KeyHasComma {
        /// Which pair.
        index: usize,
    },
    /// The key contains a character that is not printable ASCII (a control character, a tab,
    /// or anything outside ASCII).
    #[error("metadata key number {} contains a character that is not printable ASCII", .index + 1)]
    KeyNotPrintable {
        /// Which pair.
        index: usize,
    },
    /// The key was already given by an earlier pair.
    #[error("metadata key number {} repeats key number {} ({key})", .index + 1, .first + 1)]
    DuplicateKey {
        /// Which pair.
        index: usize,
        /// The earlier pair with the same key.
        first: usize,
        /// The key (printable ASCII, checked before).
        key: String,
    },
}

impl From<MetadataError> for UsageError {
    fn from(e: MetadataError) -> UsageError {
        let why = match e {
            MetadataError::EmptyKey { .. } => "a key is empty",
            MetadataError::KeyHasSpace { .. } => "a key contains a space",
            MetadataError::KeyHasComma { .. } => "a key contains a comma",
            MetadataError::KeyNotPrintable { .. } => {
                "a key contains a character that is not printable ASCII"
            }
            MetadataError::DuplicateKey { .. } => "a key is given twice",
        };
        UsageError::InvalidInput {
            what: "upload metadata",
            why,
        }
    }
}

/// Checks one key (U7): non-empty, printable ASCII without space or comma.
fn check_key(index: usize, key: &str) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey { index });
    }
    if key.contains(' ') {
        return Err(MetadataError::KeyHasSpace { index });
    }
    if key.contains(',') {
        return Err(MetadataError::KeyHasComma { index });
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MetadataError::KeyNotPrintable { index });
    }
    Ok(())
}

/// The `Upload-Metadata` value for `pairs` (U7), in order: `key SP base64(value)` joined by
/// `,`, values in the standard base64 alphabet with padding (as tusd and tus-js read them),
/// and an empty value written as the bare key (a trailing space would not survive HTTP).
/// `Ok(None)` when there are no pairs: leave the header out then.
///
/// # Errors
/// [`MetadataError`] for the first key that is empty, contains a space or comma, is not
/// printable ASCII, or repeats an earlier key. Nothing is written then.
pub fn upload_metadata<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Option<HeaderValue>, MetadataError> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = String::new();
    for (index, (key, value)) in pairs.into_iter().enumerate() {
        check_key(index, key)?;
        if let Some(&first) = seen.get(key) {
            return Err(MetadataError::DuplicateKey {
                index,
                first,
                key: key.to_owned(),
            });
        }
        seen.insert(key, index);
        if index > 0 {
            out.push(',');
        }
        out.push_str(key);
        if !value.is_empty() {
            out.push(' ');
            STANDARD.encode_string(value, &mut out);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    // Keys are printable ASCII and so is base64: a header value holds every byte, and this
    // error cannot occur.
    HeaderValue::try_from(out)
        .map(Some)
        .map_err(|_| MetadataError::KeyNotPrintable { index: 0 })
}

/// The pairs of an `Upload-Metadata` value as read: keys and decoded values, in order.
pub type Metadata = Vec<(String, Vec<u8>)>;

/// What is wrong with an `Upload-Metadata` value read by [`parse_upload_metadata`]. Names
/// the pair by its place (from 0); never contains a key or value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Upload-Metadata: {kind} (pair number {})", .pair + 1)]
pub struct MetadataParseError {
    /// Which pair (counted from 0).
    pub pair: usize,
    /// What is wrong with it.
    pub kind: MetadataParseErrorKind,
}

/// What makes an `Upload-Metadata` value invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataParseErrorKind {
    /// The value has no pairs (the protocol asks for one or more).
    #[error("no pairs")]
    NoPairs,
    /// A pair has no key (two commas in a row, or a comma at the end).
    #[error("an empty key")]
    EmptyKey,
    /// A key has a character that is not printable ASCII.
    #[error("a key with a character that is not printable ASCII")]
    KeyNotPrintable,
    /// A value is not base64 in the standard alphabet with padding.
    #[error("a value that is not base64")]
    ValueNotBase64,
    /// Something other than a comma follows a pair (a second space, for one).
    #[error("a comma was expected")]
    ExpectedComma,
    /// A key repeats an earlier pair's.
    #[error("a repeated key")]
    DuplicateKey,
}

/// Parses an `Upload-Metadata` value strictly (U7; for a server, and for tests that check
/// what a client sent): pairs separated by `,` with optional whitespace around it, each a key
/// (printable ASCII without space or comma), then a single space and the base64 value
/// (standard alphabet, padded), or the key alone for an empty value. Keys must be unique.
///
/// # Errors
/// [`MetadataParseError`] for anything else, including an empty value and a trailing comma.
pub fn parse_upload_metadata(value: &[u8]) -> Result<Metadata, MetadataParseError> {
    let mut pos = 0;
    let mut pairs: Metadata = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    skip_ows(value, &mut pos);
    if pos >= value.len() {
        return Err(MetadataParseError {
            pair: 0,
            kind: MetadataParseErrorKind::NoPairs,
        });
    }
    loop {
        let pair = pairs.len();
        let fail = |kind| MetadataParseError { pair, kind };
        let key = take_while(value, &mut pos, |b| b.is_ascii_graphic() && b != b',');
        if key.is_empty() {
            return Err(fail(match value.get(pos) {
                None | Some(b',') => MetadataParseErrorKind::EmptyKey,
                Some(_) => MetadataParseErrorKind::KeyNotPrintable,
            }));
        }
        let key: String = key.iter().map(|&b| char::from(b)).collect();
        let mut decoded = Vec::new();
        if value.get(pos) == Some(&b' ') {
            pos += 1;
            let encoded = take_while(value, &mut pos, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
            });
            decoded = STANDARD
                .decode(encoded)
                .map_err(|_| fail(MetadataParseErrorKind::ValueNotBase64))?;
        }
        if !matches!(value.get(pos), None | Some(b' ' | b'\t' | b',')) {
            return Err(fail(MetadataParseErrorKind::ExpectedComma));
        }
        if seen.contains_key(&key) {
            return Err(fail(MetadataParseErrorKind::DuplicateKey));
        }
        seen.insert(key.clone(), pair);
        pairs.push((key, decoded));
        skip_ows(value, &mut pos);
        if pos >= value.len() {
            return Ok(pairs);
        }
        if value.get(pos) != Some(&b',') {
            return Err(fail(MetadataParseErrorKind::ExpectedComma));
        }
        pos += 1;
        skip_ows(value, &mut pos);
    }
}

fn skip_ows(value: &[u8], pos: &mut usize) {
    while matches!(value.get(*pos), Some(b' ' | b'\t')) {
        *pos += 1;
    }
}

/// The bytes from `pos` on that `keep` accepts; `pos` moves past them.
fn take_while<'v>(value: &'v [u8], pos: &mut usize, keep: impl Fn(u8) -> bool) -> &'v [u8] {
    let start = *pos;
    while value.get(*pos).is_some_and(|&b| keep(b)) {
        *pos += 1;
    }
    value.get(start..*pos).unwrap_or_default()
}

/// Reads `Upload-Metadata` from `headers` (several field lines are combined with `,`):
/// `Ok(None)` when absent.
///
/// # Errors
/// As [`parse_upload_metadata`].
pub fn read_upload_metadata(headers: &HeaderMap) -> Result<Option<Metadata>, MetadataParseError> {
    combined(headers, UPLOAD_METADATA)
        .map(|value| parse_upload_metadata(&value))
        .transpose()
}

// -------------------------------------------------------------------------------------------
// Decimal fields and comma lists
// -------------------------------------------------------------------------------------------

/// A tus header that is present but not what the protocol defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TusFieldError {
    /// A single-valued header appears more than once.
    #[error("the {field} header appears more than once")]
    Repeated {
        /// The header's name.
        field: &'static str,
    },
    /// Not a non-negative decimal number (digits only, no sign, within 64 bits).
    #[error("the {field} header is not a non-negative decimal number")]
    NotDecimal {
        /// The header's name.
        field: &'static str,
    },
    /// Not a comma-separated list of tokens.
    #[error("the {field} header is not a comma-separated list of names")]
    NotTokenList {
        /// The header's name.
        field: &'static str,
    },
}

/// All field lines named `name`, combined with `,` (RFC 9110 §5.3), or `None` when absent.
fn combined(headers: &HeaderMap, name: HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for value in headers.get_all(name) {
        match &mut out {
            None => out = Some(value.as_bytes().to_vec()),
            Some(buf) => {
                buf.push(b',');
                buf.extend_from_slice(value.as_bytes());
            }
        }
    }
    out
}

/// A single-valued plain decimal header: one field line, digits only (whitespace around
/// them is not part of a field value, RFC 9110 §5.5).
fn decimal_field(
    headers: &HeaderMap,
    name: HeaderName,
    field: &'static str,
) -> Result<Option<u64>, TusFieldError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TusFieldError::Repeated { field });
    }
    let text = value
        .to_str()
        .map_err(|_| TusFieldError::NotDecimal { field })?
        .trim_matches([' ', '\t']);
    parse_decimal(text)
        .map(Some)
        .ok_or(TusFieldError::NotDecimal { field })
}

/// Reads tus's `Upload-Offset`: a plain non-negative decimal (U3, U4), not an sf-integer (no
/// fifteen-digit limit, no parameters).
///
/// # Errors
/// [`TusFieldError`] when repeated or not a non-negative decimal.
pub fn upload_offset(headers: &HeaderMap) -> Result<Option<u64>, TusFieldError> {
    decimal_field(headers, UPLOAD_OFFSET, "Upload-Offset")
}

/// Reads tus's `Upload-Length`: a plain non-negative decimal (U3, U6).
///
/// # Errors
/// [`TusFieldError`] when repeated or not a non-negative decimal.
pub fn upload_length(headers: &HeaderMap) -> Result<Option<u64>, TusFieldError> {
    decimal_field(headers, UPLOAD_LENGTH, "Upload-Length")
}

/// Reads `Tus-Max-Size`: a plain non-negative decimal (U2).
///
/// # Errors
/// [`TusFieldError`] when repeated or not a non-negative decimal.
pub fn tus_max_size(headers: &HeaderMap) -> Result<Option<u64>, TusFieldError> {
    decimal_field(headers, TUS_MAX_SIZE, "Tus-Max-Size")
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses an RFC 9110 comma list of tokens (§5.6.1): elements separated by `,` with optional
/// whitespace, empty elements ignored, order kept. `None` when an element is not a token.
fn token_list(value: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while matches!(value.get(pos), Some(b' ' | b'\t' | b',')) {
            pos += 1;
        }
        if pos >= value.len() {
            return Some(out);
        }
        let start = pos;
        while value.get(pos).is_some_and(|&b| is_tchar(b)) {
            pos += 1;
        }
        let token = value.get(start..pos).unwrap_or_default();
        if token.is_empty() {
            return None;
        }
        out.push(token.iter().map(|&b| char::from(b)).collect());
        while matches!(value.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        match value.get(pos) {
            None | Some(b',') => {}
            Some(_) => return None,
        }
    }
}

fn list_field(
    headers: &HeaderMap,
    name: HeaderName,
    field: &'static str,
) -> Result<Option<Vec<String>>, TusFieldError> {
    combined(headers, name)
        .map(|value| token_list(&value).ok_or(TusFieldError::NotTokenList { field }))
        .transpose()
}

/// Reads `Tus-Version`: the versions the server supports, most preferred first (U1, U2).
///
/// # Errors
/// [`TusFieldError::NotTokenList`] when an element is not a token.
pub fn tus_version(headers: &HeaderMap) -> Result<Option<Vec<String>>, TusFieldError> {
    list_field(headers, TUS_VERSION, "Tus-Version")
}

/// Reads `Tus-Extension`: the extensions the server supports, in its order (U2). Absent
/// means the core protocol only.
///
/// # Errors
/// [`TusFieldError::NotTokenList`] when an element is not a token.
pub fn tus_extension(headers: &HeaderMap) -> Result<Option<Vec<String>>, TusFieldError> {
    list_field(headers, TUS_EXTENSION, "Tus-Extension")
}

/// Reads `Tus-Checksum-Algorithm`: the checksum algorithms the server supports (U2, U11).
///
/// # Errors
/// [`TusFieldError::NotTokenList`] when an element is not a token.
pub fn tus_checksum_algorithm(headers: &HeaderMap) -> Result<Option<Vec<String>>, TusFieldError> {
    list_field(headers, TUS_CHECKSUM_ALGORITHM, "Tus-Checksum-Algorithm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(pairs: &[(&str, &[u8])]) -> Result<Option<HeaderValue>, MetadataError> {
        upload_metadata(pairs.iter().copied())
    }

    fn parse(value: &str) -> Result<Vec<(String, Vec<u8>)>, MetadataParseError> {
        parse_upload_metadata(value.as_bytes())
    }

    fn pairs(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    fn map(name: HeaderName, lines: &[&'static str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for line in lines {
            m.append(name.clone(), HeaderValue::from_static(line));
        }
        m
    }

    // U7: the protocol's own example, and what tusd and tus-js write.
    #[test]
    fn metadata_writer_matches_the_protocol_u7() {
        let value = write(&[
            ("filename", b"world_domination_plan.pdf"),
            ("is_confidential", b""),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            value,
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
        );
        // Padding is kept; the standard alphabet, not URL-safe.
        assert_eq!(write(&[("k", &[0xfb, 0xff])]).unwrap().unwrap(), "k +/8=");
        assert_eq!(write(&[]), Ok(None));
    }

    #[test]
    fn metadata_writer_refuses_bad_keys_u7() {
        assert_eq!(
            write(&[("a", b"1"), ("", b"x")]),
            Err(MetadataError::EmptyKey { index: 1 })
        );
        assert_eq!(
            write(&[("file name", b"x")]),
            Err(MetadataError::KeyHasSpace { index: 0 })
        );
        assert_eq!(
            write(&[("a,b", b"x")]),
            Err(MetadataError::KeyHasComma { index: 0 })
        );
        for bad in ["tab\tkey", "naïve", "nl\n", "del\x7f"] {
            assert_eq!(
                write(&[(bad, b"x")]),
                Err(MetadataError::KeyNotPrintable { index: 0 }),
                "{bad:?}"
            );
        }
        assert_eq!(
            write(&[("filename", b"a"), ("type", b"b"), ("filename", b"c")]),
            Err(MetadataError::DuplicateKey {
                index: 2,
                first: 0,
                key: "filename".into(),
            })
        );
    }

    #[test]
    fn metadata_errors_never_show_values_u7() {
        let secret = b"s3cr3t-token";
        let e = write(&[("filename", secret), ("filename", secret)]).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(
            text,
            "metadata key number 2 repeats key number 1 (filename)"
        );
        let usage = UsageError::from(MetadataError::KeyHasSpace { index: 0 });
        assert_eq!(
            usage.to_string(),
            "invalid upload metadata: a key contains a space"
        );
        let p = parse("a c2VjcmV0,a c2VjcmV0").unwrap_err();
        assert!(!p.to_string().contains("c2VjcmV0") && !p.to_string().contains("secret"));
    }

    #[test]
    fn metadata_reader_accepts_the_grammar_u7() {
        assert_eq!(
            parse("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"),
            Ok(pairs(&[
                ("filename", b"world_domination_plan.pdf"),
                ("is_confidential", b"")
            ]))
        );
        // Optional whitespace around commas; an empty value keeps or drops the space.
        assert_eq!(
            parse(" a YQ== ,\tb , c Yw==,d "),
            Ok(pairs(&[("a", b"a"), ("b", b""), ("c", b"c"), ("d", b"")]))
        );
        assert_eq!(parse("k"), Ok(pairs(&[("k", b"")])));
        let mut m = map(UPLOAD_METADATA, &["a YQ=="]);
        m.append(UPLOAD_METADATA, HeaderValue::from_static("b Yg=="));
        assert_eq!(
            read_upload_metadata(&m),
            Ok(Some(pairs(&[("a", b"a"), ("b", b"b")])))
        );
        assert_eq!(read_upload_metadata(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn metadata_reader_refuses_the_rest_u7() {
        use MetadataParseErrorKind as K;
        let kind = |v: &str| parse(v).unwrap_err().kind;
        assert_eq!(kind(""), K::NoPairs);
        assert_eq!(kind("  "), K::NoPairs);
        assert_eq!(kind("a YQ==,"), K::EmptyKey);
        assert_eq!(kind("a YQ==,,b"), K::EmptyKey);
        assert_eq!(kind(",a"), K::EmptyKey);
        assert_eq!(kind("a YQ==,a Yg=="), K::DuplicateKey);
        assert_eq!(kind("a YQ"), K::ValueNotBase64);
        assert_eq!(kind("a YR=="), K::ValueNotBase64);
        assert_eq!(kind("a -_8="), K::ExpectedComma);
        assert_eq!(kind("a  YQ=="), K::ExpectedComma);
        assert_eq!(kind("a YQ== Yg=="), K::ExpectedComma);
        assert_eq!(kind("a\tYQ=="), K::ExpectedComma);
        assert_eq!(
            parse_upload_metadata("naïve YQ==".as_bytes())
                .unwrap_err()
                .kind,
            K::ExpectedComma
        );
        assert_eq!(
            parse_upload_metadata("\u{e9} YQ==".as_bytes())
                .unwrap_err()
                .kind,
            K::KeyNotPrintable
        );
        assert_eq!(parse("a YQ==,b YR==").unwrap_err().pair, 1);
    }

    #[test]
    fn tus_offsets_are_plain_decimals_u3_u4() {
        let offset = |lines: &[&'static str]| upload_offset(&map(UPLOAD_OFFSET, lines));
        assert_eq!(offset(&["0"]), Ok(Some(0)));
        assert_eq!(offset(&[" 42 "]), Ok(Some(42)));
        // Not an sf-integer: sixteen and more digits are fine, up to 64 bits.
        assert_eq!(offset(&["18446744073709551615"]), Ok(Some(u64::MAX)));
        assert_eq!(offset(&[]), Ok(None));
        for bad in [
            "-1",
            "+1",
            "1.0",
            "42;x",
            "?1",
            "",
            "0x10",
            "18446744073709551616",
            "1 2",
        ] {
            assert_eq!(
                offset(&[bad]),
                Err(TusFieldError::NotDecimal {
                    field: "Upload-Offset"
                }),
                "{bad}"
            );
        }
        assert_eq!(
            offset(&["1", "1"]),
            Err(TusFieldError::Repeated {
                field: "Upload-Offset"
            })
        );
        assert_eq!(
            upload_length(&map(UPLOAD_LENGTH, &["1048576"])),
            Ok(Some(1_048_576))
        );
        assert_eq!(
            tus_max_size(&map(TUS_MAX_SIZE, &["1073741824"])),
            Ok(Some(1 << 30))
        );
    }

    #[test]
    fn tus_discovery_lists_u2() {
        assert_eq!(
            tus_version(&map(TUS_VERSION, &["1.0.0,0.2.2,0.2.1"])),
            Ok(Some(vec!["1.0.0".into(), "0.2.2".into(), "0.2.1".into()]))
        );
        let ext = tus_extension(&map(
            TUS_EXTENSION,
            &[
                "creation, creation-with-upload ,termination",
                "concatenation",
            ],
        ));
        assert_eq!(
            ext,
            Ok(Some(
                [
                    "creation",
                    "creation-with-upload",
                    "termination",
                    "concatenation"
                ]
                .map(String::from)
                .to_vec()
            ))
        );
        assert_eq!(
            tus_checksum_algorithm(&map(TUS_CHECKSUM_ALGORITHM, &["md5,sha1, crc32"])),
            Ok(Some(["md5", "sha1", "crc32"].map(String::from).to_vec()))
        );
        // RFC 9110 §5.6.1: empty elements are ignored.
        assert_eq!(
            tus_extension(&map(TUS_EXTENSION, &[", creation,,"])),
            Ok(Some(vec!["creation".into()]))
        );
        assert_eq!(tus_extension(&map(TUS_EXTENSION, &[""])), Ok(Some(vec![])));
        assert_eq!(tus_extension(&HeaderMap::new()), Ok(None));
        for bad in [
            "creation termination",
            "creation;q=1",
            "\"creation\"",
            "a/b",
        ] {
            assert_eq!(
                tus_extension(&map(TUS_EXTENSION, &[bad])),
                Err(TusFieldError::NotTokenList {
                    field: "Tus-Extension"
                }),
                "{bad}"
            );
        }
    }

    proptest! {
        // U7: what the writer accepts, the strict reader reads back unchanged.
        #[test]
        fn written_metadata_parses_back(
            list in proptest::collection::btree_map("[!-+--~]{1,8}", proptest::collection::vec(any::<u8>(), 0..24), 1..6)
        ) {
            let owned: Vec<(String, Vec<u8>)> = list.into_iter().collect();
            let value = upload_metadata(owned.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap()
                .unwrap();
            prop_assert_eq!(parse_upload_metadata(value.as_bytes()), Ok(owned));
        }

        // U7: any key the writer takes is one the reader takes, and the other way round.
        #[test]
        fn writer_and_reader_agree_on_keys(key in "\\PC{0,6}") {
            let written = upload_metadata([(key.as_str(), b"v".as_slice())]);
            match written {
                Ok(Some(value)) => {
                    prop_assert_eq!(parse_upload_metadata(value.as_bytes()).map(|p| p.len()), Ok(1));
                }
                Ok(None) => prop_assert!(false, "one pair writes a value"),
                Err(_) => {
                    let text = format!("{key} dg==");
                    let parsed = parse_upload_metadata(text.as_bytes());
                    prop_assert!(
                        parsed.map(|p| p.first().map(|(k, _)| k.clone())) != Ok(Some(key.clone())),
                        "the reader took a key the writer refused"
                    );
                }
            }
        }

        #[test]
        fn arbitrary_metadata_parses_or_fails_and_round_trips(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = parse_upload_metadata(&value) {
                let back = upload_metadata(p.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
                let back = back.unwrap().unwrap();
                prop_assert_eq!(parse_upload_metadata(back.as_bytes()), Ok(p));
            }
        }
    }
}
