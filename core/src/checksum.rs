//! Checksums over the source, computed incrementally from the bytes the driver hands in (G7).
//!
//! GCS reports `crc32c` (big-endian, base64) and `md5Hash` (base64) in the object resource and
//! in `x-goog-hash`; a client may send `x-goog-hash` on the final chunk so the server checks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use md5::Digest as _;

/// Which checksums to compute over the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Checksums {
    /// CRC32C (hardware accelerated; on by default).
    pub crc32c: bool,
    /// MD5 (off by default: slower, and not resumable from a saved state without re-reading
    /// the already uploaded prefix).
    pub md5: bool,
}

impl Default for Checksums {
    fn default() -> Self {
        Checksums {
            crc32c: true,
            md5: false,
        }
    }
}

impl Checksums {
    /// No checksums.
    pub const NONE: Checksums = Checksums {
        crc32c: false,
        md5: false,
    };

    /// Whether any checksum is computed.
    pub fn any(self) -> bool {
        self.crc32c || self.md5
    }
}

/// Incremental checksums over a prefix of the source.
#[derive(Clone)]
pub(crate) struct Hasher {
    len: u64,
    crc32c: Option<u32>,
    md5: Option<md5::Md5>,
}

impl Hasher {
    pub(crate) fn new(which: Checksums) -> Self {
        Hasher {
            len: 0,
            crc32c: which.crc32c.then_some(0),
            md5: which.md5.then(md5::Md5::new),
        }
    }

    /// Continues a CRC32C saved in a resume state (MD5 cannot be continued).
    pub(crate) fn resume_crc32c(len: u64, crc32c: u32) -> Self {
        Hasher {
            len,
            crc32c: Some(crc32c),
            md5: None,
        }
    }

    /// How many bytes have been hashed.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if let Some(crc) = &mut self.crc32c {
            *crc = crc32c::crc32c_append(*crc, bytes);
        }
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
    }

    pub(crate) fn crc32c(&self) -> Option<u32> {
        self.crc32c
    }

    pub(crate) fn md5(&self) -> Option<[u8; 16]> {
        self.md5.as_ref().map(|m| m.clone().finalize().into())
    }
}

/// Base64 of a CRC32C in big-endian order, as GCS writes it.
pub fn crc32c_base64(crc: u32) -> String {
    BASE64.encode(crc.to_be_bytes())
}

/// Base64 of an MD5 digest, as GCS writes it.
pub fn md5_base64(md5: &[u8; 16]) -> String {
    BASE64.encode(md5)
}

/// Decodes GCS's base64 big-endian CRC32C.
pub fn parse_crc32c_base64(text: &str) -> Option<u32> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// Decodes GCS's base64 MD5.
pub fn parse_md5_base64(text: &str) -> Option<[u8; 16]> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// The `x-goog-hash` value for the given checksums, `None` when there are none.
pub fn x_goog_hash(crc32c: Option<u32>, md5: Option<[u8; 16]>) -> Option<HeaderValue> {
    let mut parts = Vec::with_capacity(2);
    if let Some(c) = crc32c {
        parts.push(format!("crc32c={}", crc32c_base64(c)));
    }
    if let Some(m) = md5 {
        parts.push(format!("md5={}", md5_base64(&m)));
    }
    if parts.is_empty() {
        return None;
    }
    HeaderValue::from_str(&parts.join(",")).ok()
}

/// Checksums read from `x-goog-hash` values (the header may repeat, or list both at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoogHash {
    /// The CRC32C, if given and well formed.
    pub crc32c: Option<u32>,
    /// The MD5, if given and well formed.
    pub md5: Option<[u8; 16]>,
}

/// Parses every `x-goog-hash` header in `headers`. Unknown or malformed parts are ignored.
pub fn parse_x_goog_hash(headers: &http::HeaderMap) -> GoogHash {
    let mut out = GoogHash::default();
    for value in headers.get_all("x-goog-hash") {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let Some((name, v)) = part.trim().split_once('=') else {
                continue;
            };
            // base64 padding ends in '=', so split on the first '=' only (done above).
            match name.trim() {
                "crc32c" => out.crc32c = out.crc32c.or(parse_crc32c_base64(v)),
                "md5" => out.md5 = out.md5.or(parse_md5_base64(v)),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_vector_and_is_incremental() {
        // RFC 3720 B.4: 32 bytes of zeros -> 0x8a9136aa.
        let mut h = Hasher::new(Checksums::default());
        h.update(&[0u8; 10]);
        h.update(&[0u8; 22]);
        assert_eq!(h.crc32c(), Some(0x8a91_36aa));
        assert_eq!(h.len(), 32);
    }

    #[test]
    fn gcs_base64_forms() {
        // GCS documents crc32c "AAAAAA==" for an empty object and md5 "1B2M2Y8AsgTpgAmY7PhCfg==".
        assert_eq!(crc32c_base64(0), "AAAAAA==");
        let h = Hasher::new(Checksums {
            crc32c: true,
            md5: true,
        });
        assert_eq!(md5_base64(&h.md5().unwrap()), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(parse_crc32c_base64("AAAAAA=="), Some(0));
        assert_eq!(parse_crc32c_base64("not base64"), None);
    }

    #[test]
    fn x_goog_hash_round_trips() {
        let v = x_goog_hash(Some(0xdeadbeef), Some([7; 16])).unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-goog-hash", v);
        assert_eq!(
            parse_x_goog_hash(&h),
            GoogHash {
                crc32c: Some(0xdeadbeef),
                md5: Some([7; 16])
            }
        );
        assert_eq!(x_goog_hash(None, None), None);
    }
}
