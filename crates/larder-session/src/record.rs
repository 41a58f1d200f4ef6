//! What a session is to the store's callers: its public reference, a loaded
//! record, a write's outcome. Kept apart from the store so that the request
//! context and the in-process tier use them without importing the store.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A public reference to a session: the hash of its id. Safe to show and to pass
/// back to [`Sessions::revoke`](crate::Sessions::revoke); it cannot be turned into a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionRef(pub(crate) String);

impl SessionRef {
    /// The reference of the session whose cookie value is `id`.
    #[must_use]
    pub fn of_id(id: &str) -> Self {
        Self(hex_sha256(id.as_bytes()))
    }

    /// Parses a reference shown to a user (64 lowercase hex digits).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    /// The reference as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of `bytes`, as 64 lowercase hex digits: session and user references.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// A loaded session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The stored state, as the adapter encoded it.
    pub data: Vec<u8>,
    /// When the session began (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it was last touched (ms since the Unix epoch).
    pub touched_ms: u64,
    /// When it ends unless touched again (ms since the Unix epoch).
    pub expires_ms: u64,
    /// True for a rotated-away id inside its grace window: readable, never written.
    pub read_only: bool,
}

/// The outcome of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The state is stored.
    Stored,
    /// The session no longer exists (logged out, revoked, rotated away or expired):
    /// nothing was written, so it is not brought back.
    Gone,
    /// A create found the id taken; nothing was written.
    Collision,
}
