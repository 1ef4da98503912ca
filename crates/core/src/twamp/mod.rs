//! TWAMP (RFC 5357) sans-IO: the control server and its Session-Reflector ([`server`],
//! [`reflector`], which also serves TWAMP-Light), the control client ([`client`]), and the
//! shared-secret file both ends read ([`KeyFile`]).
//!
//! The wire formats and the crypto are in `ipsla_wire::twamp`; this module holds the protocol
//! state: which message comes next, which sessions exist, what a limit refuses.

pub mod client;
pub mod reflector;
pub mod server;

use std::collections::BTreeMap;
use std::fmt;

/// Longest identity (KeyID) the Set-Up-Response carries (RFC 4656 §3.1: 80 octets).
pub const MAX_KEY_ID_LEN: usize = ipsla_wire::twamp::control::KEY_ID_LEN;

/// Largest key file line count read (a guard against feeding a huge file by mistake).
const MAX_KEYS: usize = 65_536;

/// Shared secrets by identity, in the pass-phrase file format of perfSONAR twampd/twping
/// (reference §3.1): one `identity<whitespace>hex(passphrase)` per line, `#` starts a comment.
/// `Debug` prints the identities only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    keys: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile").field("identities", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why a key file was refused: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct KeyFileError {
    /// 1-based line number (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl KeyFile {
    /// Parses the text of a key file.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| KeyFileError { line, reason };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut parts = content.split_whitespace();
            let (Some(id), Some(hexpass), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err("expected `identity hex-passphrase`".into()));
            };
            if id.len() > MAX_KEY_ID_LEN {
                return Err(err(format!("identity is {} octets; at most {MAX_KEY_ID_LEN}", id.len())));
            }
            let pass = hex::decode(hexpass).map_err(|_| err("the passphrase must be hex digits".into()))?;
            if pass.is_empty() {
                return Err(err("the passphrase is empty".into()));
            }
            if pass.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Err(err("the passphrase contains CR or LF (RFC 5357 §3.1 forbids them)".into()));
            }
            if keys.len() >= MAX_KEYS {
                return Err(err(format!("more than {MAX_KEYS} identities")));
            }
            if keys.insert(id.to_string(), pass).is_some() {
                return Err(err(format!("identity \"{id}\" appears twice")));
            }
        }
        Ok(KeyFile { keys })
    }

    /// A key file holding one identity (tests, `--secret` style callers).
    pub fn single(id: &str, passphrase: &[u8]) -> Self {
        KeyFile { keys: BTreeMap::from([(id.to_string(), passphrase.to_vec())]) }
    }

    /// The passphrase of `id`.
    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.keys.get(id).map(Vec::as_slice)
    }

    /// The passphrase of the identity in a Set-Up-Response's KeyID field (zero-padded).
    pub fn get_key_id(&self, key_id: &ipsla_wire::twamp::control::KeyId) -> Option<&[u8]> {
        std::str::from_utf8(key_id.as_bytes()).ok().and_then(|id| self.get(id))
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No identities.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twampd_format() {
        // "testsecret" in hex, as twampd's pass-phrase file holds it
        let k = KeyFile::parse("# comment\nalice\t74657374736563726574\n\n bob  6869 # trailing\n").unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k.get("alice"), Some(&b"testsecret"[..]));
        assert_eq!(k.get("bob"), Some(&b"hi"[..]));
        assert_eq!(k.get("carol"), None);
        let id = ipsla_wire::twamp::control::KeyId::new(b"alice").unwrap();
        assert_eq!(k.get_key_id(&id), Some(&b"testsecret"[..]));
        assert!(!format!("{k:?}").contains("7465"), "Debug hides secrets");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(KeyFile::parse("alice zz").unwrap_err().line, 1);
        assert_eq!(KeyFile::parse("\nalice").unwrap_err().line, 2);
        assert_eq!(KeyFile::parse("a 61\na 62").unwrap_err().reason, "identity \"a\" appears twice");
        assert!(KeyFile::parse("a 610a").unwrap_err().reason.contains("CR or LF"));
        assert!(KeyFile::parse(&format!("{} 61", "x".repeat(81))).unwrap_err().reason.contains("at most 80"));
        assert!(KeyFile::parse("a 61 62").is_err());
    }
}
