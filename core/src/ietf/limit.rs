//! `Upload-Limit` (R11) and the Item fields of the resumable-upload draft (R2): typed readers
//! over [`crate::sfv`], for a client reading responses and a server reading requests, and
//! the writer a server needs for `Upload-Limit`.
//!
//! Each reader returns `Ok(None)` when the field is absent and an error when it is present but
//! not what the draft defines. The draft's answer to such a field is to ignore it as a whole
//! (R2, R11): a server that gets `Upload-Complete: true` sees a conventional upload, a client
//! that gets a broken `Upload-Limit` knows no limits. Whether that is then a protocol error is
//! the state machine's call (an `Upload-Offset` it needs and cannot read is one).

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::sfv::{self, BareItem, Dictionary, Item, Member, ParseError, SerializeError};

/// `Upload-Offset`: how many bytes of the representation the resource holds (R2).
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
/// `Upload-Length`: the length of the whole representation (R2).
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
/// `Upload-Complete`: whether this request ends the representation, or on a response whether
/// the target resource produced it (R2, R9).
pub const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
/// `Upload-Limit`: the server's limits for the upload (R11).
pub const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");

/// The first interop version whose lifetime limit is named `max-age`; before it the same
/// number of seconds was named `expires` (R19).
pub const MAX_AGE_SINCE_INTEROP: u32 = 7;

/// A header field of the draft that is present but not what the draft defines: the field is
/// to be ignored as a whole (R2, R11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The field is not a structured field of its type (an Item, or for `Upload-Limit` a
    /// Dictionary).
    #[error("the {field} header cannot be parsed: {source}")]
    Unparsable {
        /// The field's name.
        field: &'static str,
        /// Where and why parsing failed.
        source: ParseError,
    },
    /// The field parsed, but its value has the wrong type (`true` or `1` where `?1` belongs,
    /// a negative or fractional offset).
    #[error("the {field} header is not {expected}")]
    WrongType {
        /// The field's name.
        field: &'static str,
        /// What it must be, in words.
        expected: &'static str,
    },
    /// An `Upload-Limit` member the draft defines is not a non-negative integer (R11).
    #[error("the Upload-Limit header's {key} is not a non-negative integer")]
    WrongLimitType {
        /// The member's key.
        key: &'static str,
    },
}

/// The limits a server announces in `Upload-Limit` (R11): each `None` when not given. A
/// client aware of a limit must obey it; learn them from 104, 201, `HEAD` and `OPTIONS`
/// responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UploadLimit {
    /// `max-size`: the longest representation the server takes, in bytes.
    pub max_size: Option<u64>,
    /// `min-size`: below this many bytes the server may not offer resumability (it may still
    /// take the upload as a conventional one).
    pub min_size: Option<u64>,
    /// `max-append-size`: the most content one creation or append request may carry.
    pub max_append_size: Option<u64>,
    /// `min-append-size`: the least content one creation or append request may carry (not
    /// for an empty creation, nor for the request that completes the upload).
    pub min_append_size: Option<u64>,
    /// `max-age` (`expires` before interop 7): the upload resource's remaining lifetime in
    /// seconds, counted from the response that carried it. Store it with [`deadline`].
    ///
    /// [`deadline`]: UploadLimit::deadline
    pub max_age: Option<u64>,
}

/// The name under which `interop` carries the lifetime (R19).
fn lifetime_key(interop: u32) -> &'static str {
    if interop >= MAX_AGE_SINCE_INTEROP {
        "max-age"
    } else {
        "expires"
    }
}

/// A non-negative Integer Item (its parameters ignored).
fn non_negative(member: &Member) -> Option<u64> {
    let Member::Item(Item {
        bare: BareItem::Integer(n),
        ..
    }) = member
    else {
        return None;
    };
    u64::try_from(*n).ok()
}

impl UploadLimit {
    /// Reads the limits from a parsed `Upload-Limit` dictionary, as interop version `interop`
    /// names them: unknown keys (whatever their type) are ignored; a key the draft defines
    /// whose value is not a non-negative Integer voids the whole field (R11). Parameters are
    /// ignored.
    ///
    /// # Errors
    /// [`FieldError::WrongLimitType`] naming the first such key.
    pub fn from_dictionary(
        dictionary: &Dictionary,
        interop: u32,
    ) -> Result<UploadLimit, FieldError> {
        let read = |key: &'static str| -> Result<Option<u64>, FieldError> {
            dictionary
                .get(key)
                .map(|member| non_negative(member).ok_or(FieldError::WrongLimitType { key }))
                .transpose()
        };
        Ok(UploadLimit {
            max_size: read("max-size")?,
            min_size: read("min-size")?,
            max_append_size: read("max-append-size")?,
            min_append_size: read("min-append-size")?,
            max_age: read(lifetime_key(interop))?,
        })
    }

    /// The `Upload-Limit` value for these limits, as interop version `interop` names them
    /// (for a server; a server without limits sends `min-size=0`, R12).
    ///
    /// # Errors
    /// [`SerializeError`] when no limit is set (leave the field out) or one exceeds the
    /// fifteen digits of an sf-integer.
    pub fn header_value(&self, interop: u32) -> Result<HeaderValue, SerializeError> {
        let mut dictionary = Dictionary::new();
        for (key, value) in [
            ("max-size", self.max_size),
            ("min-size", self.min_size),
            ("max-append-size", self.max_append_size),
            ("min-append-size", self.min_append_size),
            (lifetime_key(interop), self.max_age),
        ] {
            if let Some(value) = value {
                // A value past i64 is past the sf-integer range too: serializing refuses it.
                let n = i64::try_from(value).unwrap_or(i64::MAX);
                dictionary.insert(key, Member::Item(Item::new(BareItem::Integer(n))));
            }
        }
        let text = sfv::serialize_dictionary(&dictionary)?;
        HeaderValue::try_from(text).map_err(|_| SerializeError("not a header value"))
    }

    /// When the upload resource's lifetime ends, for limits read from a response received at
    /// `received` (R11: keep `max-age` as an absolute deadline). `None` without a lifetime or
    /// when the instant cannot be represented.
    pub fn deadline(&self, received: Instant) -> Option<Instant> {
        received.checked_add(Duration::from_secs(self.max_age?))
    }
}

/// Reads `Upload-Limit` (R11; all its field lines combined) as interop version `interop`
/// names its members.
///
/// # Errors
/// [`FieldError::Unparsable`] when it is not a Dictionary, [`FieldError::WrongLimitType`]
/// when a member the draft defines is not a non-negative Integer: ignore the field then.
pub fn upload_limit(headers: &HeaderMap, interop: u32) -> Result<Option<UploadLimit>, FieldError> {
    let Some(dictionary) =
        sfv::dictionary_field(headers, UPLOAD_LIMIT).map_err(|source| FieldError::Unparsable {
            field: "Upload-Limit",
            source,
        })?
    else {
        return Ok(None);
    };
    UploadLimit::from_dictionary(&dictionary, interop).map(Some)
}

fn item(
    headers: &HeaderMap,
    name: HeaderName,
    field: &'static str,
) -> Result<Option<Item>, FieldError> {
    sfv::item_field(headers, name).map_err(|source| FieldError::Unparsable { field, source })
}

fn non_negative_item(
    headers: &HeaderMap,
    name: HeaderName,
    field: &'static str,
) -> Result<Option<u64>, FieldError> {
    item(headers, name, field)?
        .map(|item| {
            non_negative(&Member::Item(item)).ok_or(FieldError::WrongType {
                field,
                expected: "a non-negative integer",
            })
        })
        .transpose()
}

/// Reads `Upload-Offset`: a non-negative Integer Item, at most fifteen digits (R2).
///
/// # Errors
/// [`FieldError`] when present but not that (several field lines, a sign, a decimal point,
/// sixteen digits, a string).
pub fn upload_offset(headers: &HeaderMap) -> Result<Option<u64>, FieldError> {
    non_negative_item(headers, UPLOAD_OFFSET, "Upload-Offset")
}

/// Reads `Upload-Length`: a non-negative Integer Item, at most fifteen digits (R2).
///
/// # Errors
/// [`FieldError`] when present but not that.
pub fn upload_length(headers: &HeaderMap) -> Result<Option<u64>, FieldError> {
    non_negative_item(headers, UPLOAD_LENGTH, "Upload-Length")
}

/// Reads `Upload-Complete`: a Boolean Item, `?1` or `?0` (R2).
///
/// # Errors
/// [`FieldError`] when present but not a Boolean: `true`, `1` and `?true` are not (a server
/// then treats the request as a conventional upload).
pub fn upload_complete(headers: &HeaderMap) -> Result<Option<bool>, FieldError> {
    item(headers, UPLOAD_COMPLETE, "Upload-Complete")?
        .map(|item| {
            item.bare.as_boolean().ok_or(FieldError::WrongType {
                field: "Upload-Complete",
                expected: "a boolean (?1 or ?0)",
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(name: HeaderName, lines: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(name.clone(), HeaderValue::from_static(line));
        }
        map
    }

    fn limit(lines: &[&'static str], interop: u32) -> Result<Option<UploadLimit>, FieldError> {
        upload_limit(&headers(UPLOAD_LIMIT, lines), interop)
    }

    #[test]
    fn upload_limit_reads_every_key_r11() {
        let got = limit(
            &[
                "max-size=1000000, min-size=0, max-append-size=100000, min-append-size=10, max-age=3600",
            ],
            9,
        );
        assert_eq!(
            got,
            Ok(Some(UploadLimit {
                max_size: Some(1_000_000),
                min_size: Some(0),
                max_append_size: Some(100_000),
                min_append_size: Some(10),
                max_age: Some(3600),
            }))
        );
        assert_eq!(limit(&[], 9), Ok(None));
        assert_eq!(limit(&[""], 9), Ok(Some(UploadLimit::default())));
    }

    #[test]
    fn upload_limit_ignores_unknown_keys_and_parameters_r11() {
        let got = limit(
            &["future=\"x\", max-size=5;unit=bytes, other=(1 2), flag"],
            9,
        );
        assert_eq!(
            got,
            Ok(Some(UploadLimit {
                max_size: Some(5),
                ..UploadLimit::default()
            }))
        );
    }

    #[test]
    fn upload_limit_known_key_of_wrong_type_voids_the_field_r11() {
        for bad in [
            "max-size=\"5\"",
            "max-size=-1",
            "max-size=1.5",
            "max-size=(1 2)",
            "max-size",
            "max-size=?1",
            "max-size=a",
            "min-append-size=:AAA=:",
        ] {
            let lines = [bad, "min-size=0"];
            assert!(
                matches!(
                    upload_limit(&headers(UPLOAD_LIMIT, &lines), 9),
                    Err(FieldError::WrongLimitType { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            limit(&["max-age=-5"], 9),
            Err(FieldError::WrongLimitType { key: "max-age" })
        ));
    }

    #[test]
    fn upload_limit_syntax_errors_void_the_field_r11() {
        for bad in [
            "max-size=5,",
            "Max-Size=5",
            "max-size=1000000000000000",
            "max-size = 5",
        ] {
            assert!(
                matches!(limit(&[bad], 9), Err(FieldError::Unparsable { .. })),
                "{bad}"
            );
        }
    }

    // RFC 9651: the last of repeated keys wins, and lines are combined, before R11's types.
    #[test]
    fn upload_limit_repeats_and_lines_r11() {
        assert_eq!(
            limit(&["max-size=\"x\", max-size=6"], 9).map(|l| l.and_then(|l| l.max_size)),
            Ok(Some(6))
        );
        assert!(limit(&["max-size=6, max-size=\"x\""], 9).is_err());
        assert_eq!(
            limit(&["max-size=5", "min-size=1"], 9),
            Ok(Some(UploadLimit {
                max_size: Some(5),
                min_size: Some(1),
                ..UploadLimit::default()
            }))
        );
    }

    // R19: the lifetime is `expires` up to interop 6 and `max-age` from 7; the other name is
    // an unknown key, ignored whatever its type.
    #[test]
    fn lifetime_name_follows_the_interop_version_r19() {
        let with_age = |interop| {
            limit(&["expires=60, max-age=120"], interop)
                .unwrap()
                .unwrap()
                .max_age
        };
        assert_eq!(with_age(6), Some(60));
        assert_eq!(with_age(7), Some(120));
        assert_eq!(with_age(9), Some(120));
        assert!(limit(&["expires=\"soon\""], 6).is_err());
        assert_eq!(
            limit(&["expires=\"soon\""], 8).unwrap().unwrap().max_age,
            None
        );
        assert_eq!(limit(&["max-age=?1"], 6).unwrap().unwrap().max_age, None);
    }

    #[test]
    fn deadline_counts_from_the_response_r11() {
        let received = Instant::now();
        let l = UploadLimit {
            max_age: Some(90),
            ..UploadLimit::default()
        };
        assert_eq!(
            l.deadline(received),
            Some(received + Duration::from_secs(90))
        );
        assert_eq!(UploadLimit::default().deadline(received), None);
    }

    #[test]
    fn header_value_writes_the_server_side_r11_r12() {
        let none = UploadLimit {
            min_size: Some(0),
            ..UploadLimit::default()
        };
        assert_eq!(none.header_value(9).unwrap(), "min-size=0");
        let l = UploadLimit {
            max_size: Some(10),
            max_age: Some(5),
            ..UploadLimit::default()
        };
        assert_eq!(l.header_value(9).unwrap(), "max-size=10, max-age=5");
        assert_eq!(l.header_value(6).unwrap(), "max-size=10, expires=5");
        assert!(UploadLimit::default().header_value(9).is_err());
        let huge = UploadLimit {
            max_size: Some(1_000_000_000_000_000),
            ..UploadLimit::default()
        };
        assert!(huge.header_value(9).is_err());
        let past_i64 = UploadLimit {
            max_size: Some(u64::MAX),
            ..UploadLimit::default()
        };
        assert!(past_i64.header_value(9).is_err());
    }

    #[test]
    fn upload_offset_and_length_are_sf_integers_r2() {
        let offset = |lines: &[&'static str]| upload_offset(&headers(UPLOAD_OFFSET, lines));
        assert_eq!(offset(&["42"]), Ok(Some(42)));
        assert_eq!(offset(&[" 42 "]), Ok(Some(42)));
        assert_eq!(offset(&["42;foo=bar"]), Ok(Some(42)));
        assert_eq!(offset(&["0"]), Ok(Some(0)));
        assert_eq!(offset(&["999999999999999"]), Ok(Some(999_999_999_999_999)));
        assert_eq!(offset(&[]), Ok(None));
        for bad in [
            "1000000000000000",
            "42, 43",
            "+42",
            "0x2a",
            "",
            "42 bytes",
            "(42)",
        ] {
            assert!(
                matches!(offset(&[bad]), Err(FieldError::Unparsable { .. })),
                "{bad}"
            );
        }
        for bad in ["-1", "42.0", "\"42\"", "?1", "forty"] {
            assert!(
                matches!(offset(&[bad]), Err(FieldError::WrongType { .. })),
                "{bad}"
            );
        }
        // Two field lines are one combined value, "42, 42": not an Item.
        assert!(offset(&["42", "42"]).is_err());
        let length = |lines: &[&'static str]| upload_length(&headers(UPLOAD_LENGTH, lines));
        assert_eq!(length(&["1048576"]), Ok(Some(1_048_576)));
        assert!(length(&["1.5"]).is_err());
    }

    #[test]
    fn upload_complete_is_an_sf_boolean_r2() {
        let complete = |lines: &[&'static str]| upload_complete(&headers(UPLOAD_COMPLETE, lines));
        assert_eq!(complete(&["?1"]), Ok(Some(true)));
        assert_eq!(complete(&["?0"]), Ok(Some(false)));
        assert_eq!(complete(&["?1;x=2"]), Ok(Some(true)));
        assert_eq!(complete(&[]), Ok(None));
        // `true` and `1` are a Token and an Integer: the field is ignored.
        assert!(matches!(
            complete(&["true"]),
            Err(FieldError::WrongType { .. })
        ));
        assert!(matches!(
            complete(&["1"]),
            Err(FieldError::WrongType { .. })
        ));
        assert!(matches!(
            complete(&["?true"]),
            Err(FieldError::Unparsable { .. })
        ));
        assert!(complete(&["?1", "?1"]).is_err());
    }

    #[test]
    fn what_a_client_writes_reads_back_r2() {
        let mut map = HeaderMap::new();
        map.insert(UPLOAD_COMPLETE, sfv::boolean(false));
        map.insert(UPLOAD_OFFSET, sfv::integer(1 << 40).unwrap());
        assert_eq!(upload_complete(&map), Ok(Some(false)));
        assert_eq!(upload_offset(&map), Ok(Some(1 << 40)));
    }

    fn limit_value() -> impl Strategy<Value = Option<u64>> {
        proptest::option::of(0..=sfv::MAX_INTEGER.unsigned_abs())
    }

    proptest! {
        // R11: a written Upload-Limit parses back to the same limits, in either naming.
        #[test]
        fn written_limits_parse_back(
            max_size in limit_value(),
            min_size in limit_value(),
            max_append_size in limit_value(),
            min_append_size in limit_value(),
            max_age in limit_value(),
            interop in 6u32..10,
        ) {
            let l = UploadLimit { max_size, min_size, max_append_size, min_append_size, max_age };
            match l.header_value(interop) {
                Ok(value) => {
                    let mut map = HeaderMap::new();
                    map.insert(UPLOAD_LIMIT, value);
                    prop_assert_eq!(upload_limit(&map, interop), Ok(Some(l)));
                }
                Err(_) => prop_assert_eq!(l, UploadLimit::default()),
            }
        }

        // R2: written offsets and lengths read back.
        #[test]
        fn written_offsets_parse_back(n in 0..=sfv::MAX_INTEGER.unsigned_abs()) {
            let mut map = HeaderMap::new();
            map.insert(UPLOAD_LENGTH, sfv::integer(n).unwrap());
            prop_assert_eq!(upload_length(&map), Ok(Some(n)));
        }
    }
}
