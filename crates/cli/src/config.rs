//! The configuration file (TOML). Unknown keys are errors, and every error names the key and what
//! it accepts.

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file. Only the `[responder]` table exists so far.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[responder]`.
    #[serde(default)]
    pub responder: ResponderFile,
}

/// `[responder]`: every field optional; command-line flags override them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderFile {
    pub listen: Option<Vec<IpAddr>>,
    pub v1_port: Option<u16>,
    pub v2_port: Option<u16>,
    pub v1: Option<bool>,
    pub v2: Option<bool>,
    pub allow: Option<Vec<IpNet>>,
    pub port_range: Option<String>,
    pub max_sessions: Option<usize>,
    pub max_sessions_per_source: Option<usize>,
    pub max_duration: Option<String>,
    pub control_rate: Option<f64>,
    pub control_burst: Option<u32>,
    pub keys_file: Option<PathBuf>,
    pub require_auth: Option<bool>,
    pub timestamp_window: Option<String>,
    pub kernel_timestamps: Option<bool>,
    pub t3_calibration: Option<bool>,
    pub status_socket: Option<PathBuf>,
    pub udp_echo: Option<Vec<SocketAddr>>,
    pub tcp_connect: Option<Vec<SocketAddr>>,
    pub udp_jitter: Option<Vec<SocketAddr>>,
}

pub fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
}

/// Parses `A-B` (or a single port) into an inclusive range of non-zero ports.
pub fn parse_port_range(key: &str, s: &str) -> Result<RangeInclusive<u16>> {
    let err =
        || anyhow::anyhow!("{key}: \"{s}\" is not a port range; expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| err())?;
    let b: u16 = b.trim().parse().map_err(|_| err())?;
    if a == 0 || a > b {
        return Err(err());
    }
    Ok(a..=b)
}

/// Parses a duration like `600s`, `5m`, `1500ms`.
pub fn parse_duration(key: &str, s: &str, min: Duration, max: Duration) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        anyhow::anyhow!("{key}: \"{s}\" is not a duration ({e}); expected e.g. \"600s\", \"5m\", \"1500ms\"")
    })?;
    if d < min || d > max {
        bail!(
            "{key}: {s} is out of range; allowed {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        );
    }
    Ok(d)
}

/// Checks a count against its allowed range.
pub fn check_range<T: PartialOrd + std::fmt::Display + Copy>(key: &str, v: T, min: T, max: T) -> Result<T> {
    if v < min || v > max {
        bail!("{key}: {v} is out of range; allowed {min} to {max}");
    }
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: u16,
    secret: Option<String>,
    secret_hex: Option<String>,
}

/// Reads a keys file: `[[key]]` tables with `id` (0–65535) and `secret` (text) or `secret_hex`.
pub fn load_keys(path: &Path) -> Result<HashMap<u16, Vec<u8>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading keys file {}", path.display()))?;
    let f: KeysFile = toml::from_str(&text).with_context(|| format!("in keys file {}", path.display()))?;
    let mut keys = HashMap::new();
    for (i, k) in f.key.into_iter().enumerate() {
        let secret = match (k.secret, k.secret_hex) {
            (Some(s), None) => s.into_bytes(),
            (None, Some(h)) => hex::decode(h.trim())
                .with_context(|| format!("key[{i}].secret_hex: expected an even number of hex digits"))?,
            _ => bail!("key[{i}] (id {}): set exactly one of `secret` or `secret_hex`", k.id),
        };
        if secret.is_empty() {
            bail!("key[{i}] (id {}): the secret is empty", k.id);
        }
        if keys.insert(k.id, secret).is_some() {
            bail!("key[{i}]: id {} appears twice", k.id);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_errors_name_the_key() {
        assert_eq!(parse_port_range("port_range", "2000-3000").unwrap(), 2000..=3000);
        assert_eq!(parse_port_range("port_range", "5000").unwrap(), 5000..=5000);
        let e = parse_port_range("port_range", "3000-2000").unwrap_err().to_string();
        assert!(e.starts_with("port_range:") && e.contains("1 <= FIRST <= LAST <= 65535"), "{e}");
        assert!(parse_port_range("x", "0-10").is_err());
        assert!(parse_port_range("x", "a-b").is_err());
    }

    #[test]
    fn unknown_key_is_reported() {
        let e = toml::from_str::<FileConfig>("[responder]\nmax_sesions = 3\n").unwrap_err().to_string();
        assert!(e.contains("max_sesions") && e.contains("max_sessions"), "{e}");
    }

    #[test]
    fn durations() {
        let max = Duration::from_secs(3600);
        assert_eq!(parse_duration("d", "90s", Duration::ZERO, max).unwrap(), Duration::from_secs(90));
        let e = parse_duration("max_duration", "2h", Duration::ZERO, max).unwrap_err().to_string();
        assert!(e.contains("max_duration") && e.contains("1h"), "{e}");
        assert!(parse_duration("d", "soon", Duration::ZERO, max).unwrap_err().to_string().contains("d:"));
    }

    #[test]
    fn keys_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        std::fs::write(&p, "[[key]]\nid = 7\nsecret = \"s3cret\"\n[[key]]\nid = 8\nsecret_hex = \"00ff\"\n").unwrap();
        let k = load_keys(&p).unwrap();
        assert_eq!(k[&7], b"s3cret");
        assert_eq!(k[&8], vec![0, 255]);
        std::fs::write(&p, "[[key]]\nid = 7\n").unwrap();
        assert!(load_keys(&p).unwrap_err().to_string().contains("exactly one"));
        std::fs::write(&p, "[[key]]\nid = 7\nsecret = \"a\"\n[[key]]\nid = 7\nsecret = \"b\"\n").unwrap();
        assert!(load_keys(&p).unwrap_err().to_string().contains("twice"));
    }
}
