//! The stored form of a cache entry: a one-line header, then the payload.
//!
//! ```text
//! LC1 <tenant-marker> <module-marker> <created-ms> <fresh-until-ms> <stale-until-ms>\n<payload>
//! ```
//!
//! The header stays readable in `redis-cli`; the payload is the codec's bytes (JSON by
//! default) or a stored HTTP response. The markers are the tenant's and module's
//! invalidation markers as they were when the value was *read from the origin*: an
//! entry whose markers differ from the current ones is invisible, so a write that
//! raced with an invalidation can never serve stale data.

use std::time::Duration;

use bytes::Bytes;

const MAGIC: &[u8] = b"LC1 ";

/// Freshness and provenance of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Tenant invalidation marker at read time.
    pub tenant_marker: String,
    /// Module invalidation marker at read time.
    pub module_marker: String,
    /// When the value was produced (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// Until when the value is fresh.
    pub fresh_until_ms: u64,
    /// Until when the value may be served stale (revalidation or origin errors).
    pub stale_until_ms: u64,
}

impl Meta {
    /// Builds metadata for a value produced now, fresh for `ttl`, then servable stale
    /// for `stale`.
    #[must_use]
    pub fn new(markers: (String, String), ttl: Duration, stale: Duration) -> Self {
        let now = now_ms();
        let fresh = now.saturating_add(millis(ttl));
        Self {
            tenant_marker: markers.0,
            module_marker: markers.1,
            created_ms: now,
            fresh_until_ms: fresh,
            stale_until_ms: fresh.saturating_add(millis(stale)),
        }
    }

    /// Whether the entry is still fresh at `now_ms`.
    #[must_use]
    pub fn is_fresh_at(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// Whether the entry may still be served (fresh or stale) at `now_ms`.
    #[must_use]
    pub fn is_servable_at(&self, now_ms: u64) -> bool {
        now_ms < self.stale_until_ms
    }

    /// The entry's age in whole seconds (for the `Age` header).
    #[must_use]
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.created_ms) / 1000
    }

    /// How long Redis should keep the entry.
    #[must_use]
    pub fn redis_ttl(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.stale_until_ms.saturating_sub(now_ms).max(1))
    }

    /// The header line's tail after the markers (`created fresh stale`), which the
    /// write script completes with the markers it checked.
    pub(crate) fn times(&self) -> String {
        format!(
            "{} {} {}",
            self.created_ms, self.fresh_until_ms, self.stale_until_ms
        )
    }
}

/// An entry's stored bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt cache entry: {0}")]
pub struct CorruptEntry(pub(crate) &'static str);

/// Encodes an entry (used for the in-process tier and tests; Redis writes go through
/// the write script, which puts the same header together).
#[must_use]
pub fn encode(meta: &Meta, payload: &[u8]) -> Vec<u8> {
    let header = format!(
        "LC1 {} {} {}\n",
        marker_or_dash(&meta.tenant_marker),
        marker_or_dash(&meta.module_marker),
        meta.times()
    );
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn marker_or_dash(m: &str) -> &str {
    if m.is_empty() {
        "-"
    } else {
        m
    }
}

/// Decodes stored bytes into metadata and payload.
///
/// # Errors
/// [`CorruptEntry`] for anything that is not a well-formed entry.
pub fn decode(raw: Bytes) -> Result<(Meta, Bytes), CorruptEntry> {
    let header = Header::parse(&raw)?;
    let meta = header.meta(
        header.tenant_marker.to_owned(),
        header.module_marker.to_owned(),
    );
    Ok((meta, raw.slice(header.payload_start..)))
}

/// An entry's header line, parsed in place: a Redis hit compares its markers with
/// the current ones before copying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    /// The tenant marker (empty for `-`).
    pub(crate) tenant_marker: &'a str,
    /// The module marker (empty for `-`).
    pub(crate) module_marker: &'a str,
    created_ms: u64,
    fresh_until_ms: u64,
    /// Until when the entry may be served.
    pub(crate) stale_until_ms: u64,
    /// Where the payload starts.
    pub(crate) payload_start: usize,
}

impl<'a> Header<'a> {
    /// Parses the header line of stored bytes.
    pub(crate) fn parse(raw: &'a [u8]) -> Result<Self, CorruptEntry> {
        if !raw.starts_with(MAGIC) {
            return Err(CorruptEntry("missing LC1 header"));
        }
        // Searched and split with memchr, parsed as bytes: a Redis hit decodes this
        // line on every request.
        let nl = memchr::memchr(b'\n', &raw[..raw.len().min(512)])
            .ok_or(CorruptEntry("header line not terminated"))?;
        let line = &raw[MAGIC.len()..nl];
        let mut start = 0;
        let mut spaces = memchr::memchr_iter(b' ', line);
        let mut next = |what| {
            let end = spaces.next().unwrap_or(line.len());
            let field = line.get(start..end).filter(|f| !f.is_empty());
            start = end + 1;
            field.ok_or(CorruptEntry(what))
        };
        let marker = |s: &'a [u8]| match std::str::from_utf8(s) {
            Ok("-") => Ok(""),
            Ok(m) => Ok(m),
            Err(_) => Err(CorruptEntry("marker is not UTF-8")),
        };
        let tenant_marker = marker(next("missing tenant marker")?)?;
        let module_marker = marker(next("missing module marker")?)?;
        let num = |s: &[u8], what| parse_u64(s).ok_or(CorruptEntry(what));
        let created_ms = num(next("missing created time")?, "bad created time")?;
        let fresh_until_ms = num(next("missing fresh-until time")?, "bad fresh-until time")?;
        let stale_until_ms = num(next("missing stale-until time")?, "bad stale-until time")?;
        if start <= line.len() {
            return Err(CorruptEntry("trailing header fields"));
        }
        if fresh_until_ms < created_ms || stale_until_ms < fresh_until_ms {
            return Err(CorruptEntry("times out of order"));
        }
        Ok(Self {
            tenant_marker,
            module_marker,
            created_ms,
            fresh_until_ms,
            stale_until_ms,
            payload_start: nl + 1,
        })
    }

    /// The entry's metadata, with markers equal to this header's (the caller's
    /// strings, moved in, or copies).
    pub(crate) fn meta(&self, tenant_marker: String, module_marker: String) -> Meta {
        debug_assert!(tenant_marker == self.tenant_marker && module_marker == self.module_marker);
        Meta {
            tenant_marker,
            module_marker,
            created_ms: self.created_ms,
            fresh_until_ms: self.fresh_until_ms,
            stale_until_ms: self.stale_until_ms,
        }
    }
}

use larder_core::codec::parse_u64;
use larder_core::time::millis;
pub use larder_core::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let meta = Meta::new(
            ("t1".into(), "m1".into()),
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        let raw = Bytes::from(encode(&meta, b"{\"a\":1}\nmore"));
        let (back, payload) = decode(raw).unwrap();
        assert_eq!(back, meta);
        assert_eq!(&payload[..], b"{\"a\":1}\nmore");
        assert!(back.is_fresh_at(meta.created_ms));
        assert!(!back.is_fresh_at(meta.fresh_until_ms));
        assert!(back.is_servable_at(meta.fresh_until_ms));
    }

    #[test]
    fn empty_markers_round_trip() {
        let meta = Meta::new(
            (String::new(), String::new()),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let (back, _) = decode(Bytes::from(encode(&meta, b""))).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn rejects_corrupt_entries() {
        for raw in [
            &b""[..],
            b"garbage",
            b"LC1 a b 1 2 3",
            b"LC1 a b x 2 3\n{}",
            b"LC1 a b 1 2\n{}",
            b"LC1 a b 1 2 3 4\n{}",
            b"LC1 a b 5 2 3\n{}",
            b"LC1 \xff b 1 2 3\n{}",
            b"LC1 a b +1 2 3\n{}",
            b"LC1 a b 1 2 99999999999999999999\n{}",
            b"LC1 a  b 1 2 3\n{}",
        ] {
            assert!(decode(Bytes::copy_from_slice(raw)).is_err(), "{raw:?}");
        }
    }
}
