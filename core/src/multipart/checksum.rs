//! Checksums of S3 multipart uploads (S3, S11): the names S3 gives its algorithms, the part
//! CRC32C a part upload carries, and the object's CRC32C in both of S3's forms, computed from the
//! parts' CRCs without reading the source again.
//!
//! - Part level: `x-amz-checksum-crc32c: <base64 of the big-endian CRC32C of the part>`
//!   ([`part_crc32c`]).
//! - `FULL_OBJECT`: the CRC32C of all the object's bytes, shown without a suffix
//!   ([`full_object_crc32c`], which combines the part CRCs using CRC linearity).
//! - `COMPOSITE`: the CRC32C of the concatenated raw (big-endian) part CRCs, shown as
//!   `<base64>-<number of parts>` ([`composite_crc32c`]).

use http::HeaderName;

use super::plan::MAX_PART_SIZE;

/// A checksum algorithm S3 knows (S2): the value of `x-amz-checksum-algorithm`, and the
/// `Checksum<NAME>` element of the XML answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ChecksumAlgorithm {
    /// CRC32 (COMPOSITE or FULL_OBJECT).
    Crc32,
    /// CRC32C (COMPOSITE or FULL_OBJECT; the one this crate computes).
    Crc32c,
    /// CRC64NVME (FULL_OBJECT only).
    Crc64Nvme,
    /// SHA-1 (COMPOSITE only for multipart uploads).
    Sha1,
    /// SHA-256 (COMPOSITE only for multipart uploads).
    Sha256,
    /// SHA-512 (listed by the newest S3 model; types unverified).
    Sha512,
    /// MD5 (listed by the newest S3 model; types unverified).
    Md5,
    /// XXHASH64 (listed by the newest S3 model; types unverified).
    XxHash64,
    /// XXHASH3 (listed by the newest S3 model; types unverified).
    XxHash3,
    /// XXHASH128 (listed by the newest S3 model; types unverified).
    XxHash128,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order above.
    pub const ALL: [ChecksumAlgorithm; 10] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha512,
        ChecksumAlgorithm::Md5,
        ChecksumAlgorithm::XxHash64,
        ChecksumAlgorithm::XxHash3,
        ChecksumAlgorithm::XxHash128,
    ];

    /// S3's name for it, as sent in `x-amz-checksum-algorithm` (`CRC32C`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
            ChecksumAlgorithm::Sha512 => "SHA512",
            ChecksumAlgorithm::Md5 => "MD5",
            ChecksumAlgorithm::XxHash64 => "XXHASH64",
            ChecksumAlgorithm::XxHash3 => "XXHASH3",
            ChecksumAlgorithm::XxHash128 => "XXHASH128",
        }
    }

    /// The algorithm S3 calls `name` (exact, as S3 writes it), if it is one of these.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The element that carries this checksum in S3's XML (`ChecksumCRC32C`).
    pub fn xml_element(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "ChecksumCRC32",
            ChecksumAlgorithm::Crc32c => "ChecksumCRC32C",
            ChecksumAlgorithm::Crc64Nvme => "ChecksumCRC64NVME",
            ChecksumAlgorithm::Sha1 => "ChecksumSHA1",
            ChecksumAlgorithm::Sha256 => "ChecksumSHA256",
            ChecksumAlgorithm::Sha512 => "ChecksumSHA512",
            ChecksumAlgorithm::Md5 => "ChecksumMD5",
            ChecksumAlgorithm::XxHash64 => "ChecksumXXHASH64",
            ChecksumAlgorithm::XxHash3 => "ChecksumXXHASH3",
            ChecksumAlgorithm::XxHash128 => "ChecksumXXHASH128",
        }
    }

    /// The header that carries this checksum on a part upload or on Complete
    /// (`x-amz-checksum-crc32c`).
    pub fn header_name(self) -> HeaderName {
        HeaderName::from_static(match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
            ChecksumAlgorithm::Sha512 => "x-amz-checksum-sha512",
            ChecksumAlgorithm::Md5 => "x-amz-checksum-md5",
            ChecksumAlgorithm::XxHash64 => "x-amz-checksum-xxhash64",
            ChecksumAlgorithm::XxHash3 => "x-amz-checksum-xxhash3",
            ChecksumAlgorithm::XxHash128 => "x-amz-checksum-xxhash128",
        })
    }
}

/// How S3 checksums a multipart object (S11): `x-amz-checksum-type` and `ChecksumType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ChecksumType {
    /// The checksum of the concatenated part checksums, shown as `<base64>-<parts>`.
    Composite,
    /// The checksum of all the object's bytes.
    FullObject,
}

impl ChecksumType {
    /// S3's name for it (`COMPOSITE`, `FULL_OBJECT`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumType::Composite => "COMPOSITE",
            ChecksumType::FullObject => "FULL_OBJECT",
        }
    }

    /// The type S3 calls `name` (exact), if it is one of these.
    pub fn parse(name: &str) -> Option<Self> {
        [ChecksumType::Composite, ChecksumType::FullObject]
            .into_iter()
            .find(|t| t.as_str() == name)
    }
}

/// The `x-amz-checksum-crc32c` value of a part (S3): base64 of its CRC32C in big-endian order.
/// The same form is the `FULL_OBJECT` value of a whole object.
pub fn part_crc32c(crc32c: u32) -> String {
    // The same form GCS uses (G7).
    crate::checksum::crc32c_base64(crc32c)
}

/// One part's CRC32C and length, as recorded when the part was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PartCrc32c {
    /// The CRC32C of the part's bytes.
    pub crc32c: u32,
    /// The part's length in bytes.
    pub len: u64,
}

/// Why an object checksum cannot be computed from the parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    /// A part longer than the largest part S3 allows: not a part of a real plan.
    #[error("a part of {len} bytes is longer than the largest part allowed ({max} bytes)")]
    PartTooLong {
        /// The length given.
        len: u64,
        /// The largest part allowed.
        max: u64,
    },
}

/// `crc32c(A ‖ B)` from `acc = crc32c(A)`, `crc = crc32c(B)` and `len = |B|`, handing the crate
/// lengths of at most `step` bytes (a `u64` length need not fit a `usize`): combining with an
/// empty CRC shifts `acc` over `step` zero bytes, which composes.
fn combine_in_steps(mut acc: u32, crc: u32, mut len: u64, step: usize) -> u32 {
    let step_len = u64::try_from(step).unwrap_or(u64::MAX);
    // At most ⌈len / step⌉ rounds; `len` ≤ 5 GiB and `step` ≥ 2³² − 1 make that ≤ 2.
    while len > step_len {
        acc = crc32c::crc32c_combine(acc, 0, step);
        len -= step_len;
    }
    let rest = usize::try_from(len).unwrap_or(step);
    crc32c::crc32c_combine(acc, crc, rest)
}

/// The `FULL_OBJECT` CRC32C of an object from its parts' CRC32Cs and lengths, in part order,
/// without reading the bytes again (S11): send it as `x-amz-checksum-crc32c` with
/// `x-amz-checksum-type: FULL_OBJECT` on Complete, or compare it with the answer's.
///
/// # Errors
/// [`ChecksumError::PartTooLong`] for a part over 5 GiB (which also keeps the work bounded).
pub fn full_object_crc32c(parts: &[PartCrc32c]) -> Result<u32, ChecksumError> {
    parts.iter().try_fold(0u32, |acc, part| {
        if part.len > MAX_PART_SIZE {
            return Err(ChecksumError::PartTooLong {
                len: part.len,
                max: MAX_PART_SIZE,
            });
        }
        Ok(combine_in_steps(acc, part.crc32c, part.len, usize::MAX))
    })
}

/// The `COMPOSITE` CRC32C value of an object from its parts' CRC32Cs in part order (S11):
/// `<base64 of crc32c(the big-endian part CRCs, concatenated)>-<number of parts>`.
pub fn composite_crc32c(part_crcs: &[u32]) -> String {
    let crc = part_crcs
        .iter()
        .fold(0u32, |acc, c| crc32c::crc32c_append(acc, &c.to_be_bytes()));
    format!("{}-{}", part_crc32c(crc), part_crcs.len())
}

/// A CRC32C value as S3 shows it: base64 of the big-endian CRC, with `-<parts>` for a
/// `COMPOSITE` object checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crc32cValue {
    /// The CRC32C.
    pub crc32c: u32,
    /// The number of parts after the `-`, for a `COMPOSITE` value; `None` for a part or a
    /// `FULL_OBJECT` value.
    pub parts: Option<u32>,
}

/// Reads a CRC32C value from `x-amz-checksum-crc32c` or a `ChecksumCRC32C` element (`base64`
/// or `base64-N`). `None` for anything else. The base64 alphabet has no `-`, so the suffix is
/// found exactly.
pub fn parse_crc32c(text: &str) -> Option<Crc32cValue> {
    let (digest, parts) = match text.split_once('-') {
        Some((digest, n)) => {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (digest, Some(n.parse::<u32>().ok()?))
        }
        None => (text, None),
    };
    Some(Crc32cValue {
        crc32c: crate::checksum::parse_crc32c_base64(digest)?,
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    /// Deterministic, non-trivial bytes.
    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    #[test]
    fn s11_part_header_is_base64_of_the_big_endian_crc() {
        // RFC 3720 B.4: 32 zero bytes have CRC32C 0x8a9136aa.
        let crc = crc32c::crc32c(&[0u8; 32]);
        assert_eq!(crc, 0x8a91_36aa);
        assert_eq!(part_crc32c(crc), BASE64.encode([0x8a, 0x91, 0x36, 0xaa]));
        assert_eq!(part_crc32c(crc), "ipE2qg==");
        assert_eq!(
            parse_crc32c("ipE2qg=="),
            Some(Crc32cValue {
                crc32c: crc,
                parts: None
            })
        );
    }

    #[test]
    fn s11_full_object_crc_combines_the_parts_without_rereading() {
        let parts = [bytes(5 << 20, 1), bytes(5 << 20, 2), bytes(1234, 3)];
        let whole: Vec<u8> = parts.concat();
        let recorded: Vec<PartCrc32c> = parts
            .iter()
            .map(|p| PartCrc32c {
                crc32c: crc32c::crc32c(p),
                len: p.len() as u64,
            })
            .collect();
        assert_eq!(full_object_crc32c(&recorded), Ok(crc32c::crc32c(&whole)));
    }

    #[test]
    fn s11_full_object_crc_of_edge_cases() {
        assert_eq!(full_object_crc32c(&[]), Ok(crc32c::crc32c(b"")));
        let one = bytes(777, 9);
        let single = PartCrc32c {
            crc32c: crc32c::crc32c(&one),
            len: 777,
        };
        assert_eq!(full_object_crc32c(&[single]), Ok(crc32c::crc32c(&one)));
        // An empty last part changes nothing.
        let empty = PartCrc32c {
            crc32c: crc32c::crc32c(b""),
            len: 0,
        };
        assert_eq!(
            full_object_crc32c(&[single, empty]),
            Ok(crc32c::crc32c(&one))
        );
        let too_long = PartCrc32c {
            crc32c: 0,
            len: MAX_PART_SIZE + 1,
        };
        assert_eq!(
            full_object_crc32c(&[single, too_long]),
            Err(ChecksumError::PartTooLong {
                len: MAX_PART_SIZE + 1,
                max: MAX_PART_SIZE
            })
        );
        // The largest part is accepted (the combination is arithmetic, nothing is read).
        let largest = PartCrc32c {
            crc32c: 0,
            len: MAX_PART_SIZE,
        };
        assert!(full_object_crc32c(&[single, largest]).is_ok());
    }

    #[test]
    fn s11_combining_in_steps_equals_one_combination() {
        // What a target with a 32-bit usize does for a part over 4 GiB, checked with tiny steps.
        let a = bytes(100, 4);
        let b = bytes(10, 5);
        let whole = [a.as_slice(), b.as_slice()].concat();
        let (ca, cb) = (crc32c::crc32c(&a), crc32c::crc32c(&b));
        for step in [1, 3, 7, 9, 10, 11, usize::MAX] {
            assert_eq!(
                combine_in_steps(ca, cb, 10, step),
                crc32c::crc32c(&whole),
                "{step}"
            );
        }
    }

    #[test]
    fn s11_composite_crc_is_the_crc_of_the_raw_part_crcs_with_the_count() {
        let parts = [bytes(5 << 20, 6), bytes(3, 7)];
        let crcs: Vec<u32> = parts.iter().map(|p| crc32c::crc32c(p)).collect();
        let mut raw = Vec::new();
        for c in &crcs {
            raw.extend_from_slice(&c.to_be_bytes());
        }
        let expected = format!("{}-2", BASE64.encode(crc32c::crc32c(&raw).to_be_bytes()));
        assert_eq!(composite_crc32c(&crcs), expected);
        assert_eq!(
            parse_crc32c(&expected),
            Some(Crc32cValue {
                crc32c: crc32c::crc32c(&raw),
                parts: Some(2)
            })
        );
        // COMPOSITE is not the CRC of the bytes.
        assert_ne!(
            parse_crc32c(&expected).unwrap().crc32c,
            crc32c::crc32c(&parts.concat())
        );
    }

    #[test]
    fn s11_malformed_crc_values_are_refused() {
        for bad in [
            "",
            "-",
            "ipE2qg==-",
            "ipE2qg==-x",
            "ipE2qg==-+1",
            "ipE2qg==-1-2",
            "ipE2",
            "AAAAAAAA",
            "ipE2qg==-99999999999",
        ] {
            assert_eq!(parse_crc32c(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn s2_algorithm_and_type_names_round_trip() {
        for a in ChecksumAlgorithm::ALL {
            assert_eq!(ChecksumAlgorithm::parse(a.as_str()), Some(a));
            assert_eq!(a.xml_element(), format!("Checksum{}", a.as_str()));
            assert_eq!(
                a.header_name().as_str(),
                format!("x-amz-checksum-{}", a.as_str().to_ascii_lowercase())
            );
        }
        assert_eq!(ChecksumAlgorithm::parse("crc32c"), None);
        for t in [ChecksumType::Composite, ChecksumType::FullObject] {
            assert_eq!(ChecksumType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ChecksumType::parse("full_object"), None);
    }
}
