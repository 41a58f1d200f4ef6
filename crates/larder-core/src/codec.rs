//! How values become bytes in Redis.
//!
//! JSON ([`Json`]) is the default: entries stay readable in `redis-cli`. A value that
//! fails to decode is a [`CodecError`] — a data fault that callers treat as a miss
//! (and delete), never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be serialised.
    #[error("could not encode value with the {codec} codec")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// The serialiser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The stored bytes are not a valid value of the requested type.
    #[error("stored value ({len} bytes) does not decode with the {codec} codec")]
    Decode {
        /// The codec's name.
        codec: &'static str,
        /// Length of the stored bytes.
        len: usize,
        /// The deserialiser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Turns typed values into bytes and back.
pub trait Codec: Clone + Send + Sync + 'static {
    /// A short name, for errors and metrics.
    const NAME: &'static str;

    /// Serialises `value`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the value cannot be represented.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError>;

    /// Deserialises `bytes`.
    ///
    /// # Errors
    /// [`CodecError::Decode`] when the bytes are not a valid `T`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// serde JSON: readable in `redis-cli`, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::Encode {
            codec: Self::NAME,
            source: Box::new(e),
        })
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode {
            codec: Self::NAME,
            len: bytes.len(),
            source: Box::new(e),
        })
    }
}

/// A decimal `u64` read from bytes (digits only, no sign, no spaces): `None` on
/// anything else or on overflow. For numbers stored in Redis records, which arrive
/// as bytes (`str::parse` would need a UTF-8 check first).
#[must_use]
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        id: u32,
        name: String,
    }

    #[test]
    fn round_trips_and_reports_corrupt_bytes() {
        let row = Row {
            id: 7,
            name: "bolts".into(),
        };
        let bytes = Json.encode(&row).unwrap();
        assert_eq!(bytes, br#"{"id":7,"name":"bolts"}"#);
        assert_eq!(Json.decode::<Row>(&bytes).unwrap(), row);

        for corrupt in [
            &b"{\"id\":7"[..],
            b"\xff\xfe",
            b"",
            br#"{"id":"x","name":1}"#,
        ] {
            let err = Json.decode::<Row>(corrupt).unwrap_err();
            assert!(matches!(err, CodecError::Decode { len, .. } if len == corrupt.len()));
            assert!(std::error::Error::source(&err).is_some());
        }
    }

    #[test]
    fn parses_numbers_as_str_parse_does() {
        for s in ["0", "7", "1700000000000", "18446744073709551615"] {
            assert_eq!(parse_u64(s.as_bytes()), s.parse().ok(), "{s}");
        }
        for s in ["", "18446744073709551616", "-1", "+1", "1 ", "1a", "x"] {
            assert_eq!(parse_u64(s.as_bytes()), None, "{s}");
        }
    }
}
