//! Where OAuth 1.0a timestamps and nonces come from: injectable, so tests are deterministic.
//!
//! The real sources are [`SystemWallClock`] (seconds since 1970 from [`std::time::SystemTime`])
//! and [`OsNonce`] (random bytes from the operating system). Tests pass closures instead:
//! `|| 1318622958` is a [`WallClock`], `|| "abc".to_string()` a [`NonceSource`].

use std::time::{SystemTime, UNIX_EPOCH};

use crate::SignError;

/// The wall-clock time OAuth 1.0a puts in `oauth_timestamp` (RFC 5849 3.3): whole seconds since
/// 1970-01-01T00:00:00Z.
///
/// The signer reads it once per signed request. Any `FnMut() -> u64 + Send` is one.
pub trait WallClock {
    /// Seconds since the Unix epoch, now. Zero means "unknown"; signing then fails with
    /// [`SignError::ClockBeforeEpoch`] rather than send a timestamp the server rejects.
    fn unix_seconds(&mut self) -> u64;
}

impl<F: FnMut() -> u64> WallClock for F {
    fn unix_seconds(&mut self) -> u64 {
        self()
    }
}

/// The system's wall clock. OAuth 1.0a servers reject timestamps far from their own clock
/// (Twitter allows a few minutes), so the machine's clock must be roughly right.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn unix_seconds(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    }
}

/// Where `oauth_nonce` values come from (RFC 5849 3.3): a fresh, unpredictable string for every
/// signed request, retries included.
///
/// The signer asks for one nonce per signed request. Any `FnMut() -> String + Send` is one (for
/// tests; a real nonce must be random, as [`OsNonce`]'s is).
pub trait NonceSource {
    /// A nonce never handed out before. It is percent-encoded where it is used, so any text
    /// works; an empty one makes signing fail with [`SignError::EmptyNonce`].
    ///
    /// # Errors
    /// [`SignError::Randomness`] when no random bytes could be had.
    fn nonce(&mut self) -> Result<String, SignError>;
}

impl<F: FnMut() -> String> NonceSource for F {
    fn nonce(&mut self) -> Result<String, SignError> {
        Ok(self())
    }
}

/// Nonces of 32 hexadecimal digits: 128 bits from the operating system's random source.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsNonce;

impl NonceSource for OsNonce {
    fn nonce(&mut self) -> Result<String, SignError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| SignError::Randomness)?;
        let mut text = String::with_capacity(32);
        for byte in bytes {
            text.push(hex_digit(byte >> 4));
            text.push(hex_digit(byte & 0x0f));
        }
        Ok(text)
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_nonces_are_fresh_and_unreserved() {
        let mut source = OsNonce;
        let a = source.nonce().unwrap();
        let b = source.nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn closures_are_sources() {
        let mut clock = || 42u64;
        assert_eq!(clock.unix_seconds(), 42);
        let mut n = 0;
        let mut nonces = move || {
            n += 1;
            format!("n{n}")
        };
        assert_eq!(nonces.nonce().unwrap(), "n1");
        assert_eq!(nonces.nonce().unwrap(), "n2");
        assert!(SystemWallClock.unix_seconds() > 1_600_000_000);
    }
}
