//! The configuration file (TOML). Unknown keys are errors, and every error names the key and what
//! it accepts.

use ipnet::IpNet;
use ipsla_core::responder::{PermanentKind, ResponderConfig};
use ipsla_core::twamp::KeyFile;
use ipsla_core::twamp::server::ServerConfig as TwampConfig;
use ipsla_net::responder::ResponderOptions;
use ipsla_wire::twamp::Modes;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: the message names the key (or flag) and what it accepts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Result of this module.
pub type Result<T> = std::result::Result<T, ConfigError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(ConfigError(format!($($t)*))) };
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The whole file. Only the `[responder]` table exists so far.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[responder]`.
    #[serde(default)]
    pub responder: ResponderFile,
}

/// `[responder]`: every field optional; command-line flags override them.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
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
    pub stamp: Option<Vec<SocketAddr>>,
    pub stamp_stateful: Option<bool>,
    pub stamp_key_file: Option<PathBuf>,
    pub twamp: Option<Vec<SocketAddr>>,
    pub twamp_modes: Option<String>,
    pub twamp_keys_file: Option<PathBuf>,
    pub twamp_test_ports: Option<String>,
    pub twamp_light: Option<Vec<SocketAddr>>,
    pub twamp_light_stateful: Option<bool>,
    /// Worker threads answering the measurement and reflector ports (default one per CPU).
    pub workers: Option<usize>,
    /// Steer by the receiving CPU instead of the flow's hash (default false).
    pub steer_by_cpu: Option<bool>,
    /// Most TWAMP control connections at once (default 64).
    pub twamp_max_connections: Option<usize>,
    /// Most TWAMP control connections at once from one address (default 8).
    pub twamp_max_connections_per_source: Option<usize>,
    /// Most test sessions one control connection may request (default 16).
    pub twamp_max_sessions: Option<usize>,
    /// Time from the connection to the Set-Up-Response (default 30s).
    pub twamp_setup_timeout: Option<String>,
    /// SERVWAIT, an idle control connection is closed after it (default 900s, RFC 5357 §3.8).
    pub twamp_servwait: Option<String>,
    /// REFWAIT, a session without test packets ends after it (default 900s, RFC 5357 §4.2).
    pub twamp_refwait: Option<String>,
    /// New control connections per second from one address, burst twice that (default 20; 0 = no limit).
    pub twamp_connection_rate: Option<f64>,
}

/// Largest configuration file read.
pub const MAX_CONFIG_LEN: u64 = 16 << 20;
/// Largest key or secret file read.
pub const MAX_KEY_FILE_LEN: u64 = 1 << 20;

static OFFLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Validation without side effects (for fuzzing the configuration): no file is read and no host
/// name is resolved; both become errors naming the key.
pub fn set_offline(on: bool) {
    OFFLINE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_offline`] is on.
pub fn offline() -> bool {
    OFFLINE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads at most `max` octets of `path` (a key pointing at /dev/zero or a huge file is an error
/// naming `key`, not an unbounded allocation).
pub fn read_limited(key: &str, path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let fail = |e: &dyn std::fmt::Display| err(format!("{key}: reading {}: {e}", path.display()));
    if offline() {
        return Err(fail(&"file access is off"));
    }
    let f = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(|e| fail(&e))?;
    if buf.len() as u64 > max {
        return Err(fail(&format!("larger than {max} octets")));
    }
    Ok(buf)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text(key: &str, path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_limited(key, path, max)?)
        .map_err(|_| err(format!("{key}: {} is not UTF-8 text", path.display())))
}

/// Reads and parses a TOML file into `T`.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_text("config file", path, MAX_CONFIG_LEN)?;
    toml::from_str(&text).map_err(|e| err(format!("in config file {}: {e}", path.display())))
}

/// Reads `ipsla responder`'s config file.
pub fn load(path: &Path) -> Result<FileConfig> {
    load_toml(path)
}

impl ResponderFile {
    /// This file with every field `over` sets replaced (command-line flags over the file).
    pub fn overlay(self, over: ResponderFile) -> ResponderFile {
        macro_rules! pick {
            ($($f:ident),*) => { ResponderFile { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            listen,
            v1_port,
            v2_port,
            v1,
            v2,
            allow,
            port_range,
            max_sessions,
            max_sessions_per_source,
            max_duration,
            control_rate,
            control_burst,
            keys_file,
            require_auth,
            timestamp_window,
            kernel_timestamps,
            t3_calibration,
            status_socket,
            udp_echo,
            tcp_connect,
            udp_jitter,
            stamp,
            stamp_stateful,
            stamp_key_file,
            twamp,
            twamp_modes,
            twamp_keys_file,
            twamp_test_ports,
            twamp_light,
            twamp_light_stateful,
            workers,
            steer_by_cpu,
            twamp_max_connections,
            twamp_max_connections_per_source,
            twamp_max_sessions,
            twamp_setup_timeout,
            twamp_servwait,
            twamp_refwait,
            twamp_connection_rate
        )
    }

    /// Validated responder options.
    pub fn options(&self) -> Result<ResponderOptions> {
        let d = ResponderConfig::default();
        let mut core = ResponderConfig {
            port_range: match &self.port_range {
                Some(s) => parse_port_range("port_range", s)?,
                None => d.port_range.clone(),
            },
            max_sessions: check_range("max_sessions", self.max_sessions.unwrap_or(d.max_sessions), 1, 1_000_000)?,
            max_sessions_per_source: check_range(
                "max_sessions_per_source",
                self.max_sessions_per_source.unwrap_or(d.max_sessions_per_source),
                1,
                1_000_000,
            )?,
            max_duration: match &self.max_duration {
                Some(s) => parse_duration("max_duration", s, Duration::from_millis(1), Duration::from_secs(86_400))?,
                None => d.max_duration,
            },
            allow: self.allow.clone().unwrap_or_default(),
            control_rate: check_range("control_rate", self.control_rate.unwrap_or(d.control_rate), 0.0, 1e6)?,
            control_burst: check_range("control_burst", self.control_burst.unwrap_or(d.control_burst), 1, 1_000_000)?,
            require_auth: self.require_auth.unwrap_or(false),
            timestamp_window: match &self.timestamp_window {
                Some(s) => parse_duration("timestamp_window", s, Duration::from_secs(1), Duration::from_secs(86_400))?,
                None => d.timestamp_window,
            },
            ..d
        };
        if let Some(p) = &self.keys_file {
            core.keys = load_keys(p)?;
        }
        if core.require_auth && core.keys.is_empty() {
            bail!("require_auth: set, but no keys are configured (keys_file / --keys FILE)");
        }
        let mut permanent = Vec::new();
        let list = |v: &Option<Vec<SocketAddr>>| v.clone().unwrap_or_default();
        permanent.extend(list(&self.udp_echo).into_iter().map(|a| (PermanentKind::UdpEcho, a)));
        permanent.extend(list(&self.tcp_connect).into_iter().map(|a| (PermanentKind::TcpConnect, a)));
        permanent.extend(list(&self.udp_jitter).into_iter().map(|a| (PermanentKind::UdpJitter, a)));
        for (_, a) in &permanent {
            core.reserved_ports.push(a.port());
        }
        Ok(ResponderOptions {
            listen: self.listen.clone().unwrap_or_default(),
            v1_port: self.v1_port.unwrap_or(ipsla_wire::cisco::CONTROL_V1_PORT),
            v2_port: self.v2_port.unwrap_or(ipsla_wire::cisco::CONTROL_V2_PORT),
            v1_enabled: self.v1.unwrap_or(true),
            v2_enabled: self.v2.unwrap_or(true),
            permanent,
            kernel_timestamps: self.kernel_timestamps.unwrap_or(true),
            core,
            status_socket: self.status_socket.clone(),
            t3_calibration: self.t3_calibration.unwrap_or(true),
            stamp: list(&self.stamp),
            stamp_stateful: self.stamp_stateful.unwrap_or(false),
            stamp_key: match &self.stamp_key_file {
                Some(p) => Some(load_stamp_key("stamp_key_file", p)?),
                None => None,
            },
            twamp: list(&self.twamp),
            twamp_config: self.twamp_config()?,
            twamp_light: list(&self.twamp_light),
            twamp_light_stateful: self.twamp_light_stateful.unwrap_or(false),
            workers: match self.workers {
                Some(n) => check_range("workers", n, 1, 1024)?,
                None => 0,
            },
            steer_by_cpu: self.steer_by_cpu.unwrap_or(false),
        })
    }

    /// The TWAMP server settings: modes, key file, test ports (RFC 5357 §3).
    fn twamp_config(&self) -> Result<TwampConfig> {
        let d = TwampConfig::default();
        let modes = match &self.twamp_modes {
            Some(s) => parse_twamp_modes(TWAMP_MODES_KEY, s)?,
            None => d.modes,
        };
        let keys = match &self.twamp_keys_file {
            Some(p) => load_twamp_keys(TWAMP_KEYS_KEY, p)?,
            None => KeyFile::default(),
        };
        if (modes & Modes(0xe)).0 != 0 && keys.is_empty() {
            bail!(
                "{TWAMP_KEYS_KEY}: required by {TWAMP_MODES_KEY} auth, encrypted or mixed (a file of `identity hex(passphrase)` lines)"
            );
        }
        let test_ports = match &self.twamp_test_ports {
            Some(s) => parse_port_range("twamp_test_ports (--twamp-test-ports)", s)?,
            None => d.test_ports.clone(),
        };
        let count = |key, v: Option<usize>, default, max| check_range(key, v.unwrap_or(default), 1, max);
        let wait = |key, v: &Option<String>, default| match v {
            Some(s) => parse_duration(key, s, Duration::from_secs(1), Duration::from_secs(86_400)),
            None => Ok(default),
        };
        let cfg = TwampConfig {
            modes,
            keys,
            test_ports,
            max_connections: count("twamp_max_connections", self.twamp_max_connections, d.max_connections, 100_000)?,
            max_connections_per_source: count(
                "twamp_max_connections_per_source",
                self.twamp_max_connections_per_source,
                d.max_connections_per_source,
                100_000,
            )?,
            max_sessions: count("twamp_max_sessions", self.twamp_max_sessions, d.max_sessions, 4096)?,
            setup_timeout: wait("twamp_setup_timeout", &self.twamp_setup_timeout, d.setup_timeout)?,
            servwait: wait("twamp_servwait", &self.twamp_servwait, d.servwait)?,
            refwait: wait("twamp_refwait", &self.twamp_refwait, d.refwait)?,
            connection_rate: check_range(
                "twamp_connection_rate",
                self.twamp_connection_rate.unwrap_or(d.connection_rate),
                0.0,
                1e6,
            )?,
            ..d
        };
        cfg.validate().map_err(|e| err(format!("twamp: {e}")))?;
        Ok(cfg)
    }
}

const TWAMP_MODES_KEY: &str = "twamp_modes (--twamp-modes)";
const TWAMP_KEYS_KEY: &str = "twamp_keys_file (--twamp-keys)";

/// Parses a comma-separated list of TWAMP security modes (RFC 4656 §3.1, RFC 5618): `open`,
/// `auth`, `encrypted`, `mixed` (also `unauthenticated`, `authenticated`, `encrypt`).
pub fn parse_twamp_modes(key: &str, s: &str) -> Result<Modes> {
    let mut m = Modes(0);
    for name in s.split(',').map(str::trim) {
        m = m | match name {
            "open" | "unauthenticated" => Modes::UNAUTHENTICATED,
            "auth" | "authenticated" => Modes::AUTHENTICATED,
            "encrypted" | "encrypt" => Modes::ENCRYPTED,
            "mixed" => Modes::MIXED,
            _ => bail!("{key}: \"{name}\" is not a TWAMP mode; allowed open, auth, encrypted, mixed (comma-separated)"),
        };
    }
    Ok(m)
}

/// Reads a twampd pass-phrase file: `identity hex(passphrase)` per line (reference §3.1).
pub fn load_twamp_keys(key: &str, path: &Path) -> Result<KeyFile> {
    let text = read_text(key, path, MAX_KEY_FILE_LEN)?;
    let k = KeyFile::parse(&text).map_err(|e| err(format!("{key}: {}: {e}", path.display())))?;
    if k.is_empty() {
        bail!("{key}: {} holds no identity; expected `identity hex(passphrase)` lines", path.display());
    }
    Ok(k)
}

/// Reads a STAMP HMAC key file (RFC 8762 §4.4: a pre-shared key): hex digits (stamp-suite's
/// format, e.g. 64 for 32 octets), else the file's bytes with surrounding white space removed.
pub fn load_stamp_key(key: &str, path: &Path) -> Result<Vec<u8>> {
    let raw = read_limited(key, path, MAX_KEY_FILE_LEN)?;
    let text = String::from_utf8_lossy(&raw);
    let t = text.trim();
    let k = match hex::decode(t) {
        Ok(k) if !t.is_empty() => k,
        _ => t.as_bytes().to_vec(),
    };
    if k.is_empty() {
        bail!("{key}: {} is empty; expected a key as hex digits or text", path.display());
    }
    Ok(k)
}

/// Parses `A-B` (or a single port) into an inclusive range of non-zero ports.
pub fn parse_port_range(key: &str, s: &str) -> Result<RangeInclusive<u16>> {
    let bad =
        || err(format!("{key}: \"{s}\" is not a port range; expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535"));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// Parses a duration like `600s`, `5m`, `1500ms`.
pub fn parse_duration(key: &str, s: &str, min: Duration, max: Duration) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        err(format!("{key}: \"{s}\" is not a duration ({e}); expected e.g. \"600s\", \"5m\", \"1500ms\""))
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

/// Parses a size like `100MiB`, `512KiB`, `2GiB` or `1048576` (bytes), within `min..=max` bytes.
pub fn parse_size(key: &str, s: &str, min: u64, max: u64) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            bail!("{key}: \"{s}\" is not a size; expected a whole number with B, KiB, MiB, GiB or TiB, e.g. \"100MiB\"")
        }
    };
    let v = n.parse::<u64>().ok().and_then(|n| n.checked_mul(mult));
    let Some(v) = v else {
        bail!("{key}: \"{s}\" is not a size; expected a whole number with B, KiB, MiB, GiB or TiB, e.g. \"100MiB\"")
    };
    if v < min || v > max {
        bail!("{key}: {s} is out of range; allowed {} to {}", human_size(min), human_size(max));
    }
    Ok(v)
}

/// A size in the largest binary unit that divides it (`100MiB`).
pub fn human_size(v: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if v >= 1 << shift && v.is_multiple_of(1 << shift) {
            return format!("{}{unit}", v >> shift);
        }
    }
    format!("{v}B")
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
    let text = read_text("keys file", path, MAX_KEY_FILE_LEN)?;
    let f: KeysFile = toml::from_str(&text).map_err(|e| err(format!("in keys file {}: {e}", path.display())))?;
    let mut keys = HashMap::new();
    for (i, k) in f.key.into_iter().enumerate() {
        let secret = match (k.secret, k.secret_hex) {
            (Some(s), None) => s.into_bytes(),
            (None, Some(h)) => hex::decode(h.trim())
                .map_err(|_| err(format!("key[{i}].secret_hex: expected an even number of hex digits")))?,
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
    fn file_reads_are_bounded() {
        // an endless file is an error naming the key, not an endless allocation
        let e = read_limited("stamp_key_file", Path::new("/dev/zero"), 4096).unwrap_err();
        assert_eq!(e.0, "stamp_key_file: reading /dev/zero: larger than 4096 octets");
        let e = load_stamp_key("stamp_key_file", Path::new("/dev/zero")).unwrap_err();
        assert!(e.0.contains("larger than 1048576 octets"), "{e}");
        let dir = std::env::temp_dir().join(format!("ipsla-read-{}", std::process::id()));
        std::fs::write(&dir, [0xff, 0xfe]).unwrap();
        assert!(read_text("k", &dir, 10).unwrap_err().0.ends_with("is not UTF-8 text"));
        assert_eq!(read_limited("k", &dir, 2).unwrap(), [0xff, 0xfe]);
        std::fs::remove_file(&dir).unwrap();
        assert!(
            read_limited("k", Path::new("/nonexistent/x"), 2).unwrap_err().0.starts_with("k: reading /nonexistent/x:")
        );
    }

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
    fn sizes() {
        let (min, max) = (1 << 20, 1 << 40);
        assert_eq!(parse_size("k", "100MiB", min, max).unwrap(), 100 << 20);
        assert_eq!(parse_size("k", "2 GiB", min, max).unwrap(), 2 << 30);
        assert_eq!(parse_size("k", "1048576", min, max).unwrap(), 1 << 20);
        assert_eq!(
            parse_size("agent.store_max_size", "100MB", min, max).unwrap_err().to_string(),
            "agent.store_max_size: \"100MB\" is not a size; expected a whole number with B, KiB, MiB, GiB or TiB, e.g. \"100MiB\""
        );
        assert_eq!(
            parse_size("agent.store_max_size", "512KiB", min, max).unwrap_err().to_string(),
            "agent.store_max_size: 512KiB is out of range; allowed 1MiB to 1TiB"
        );
        assert!(parse_size("k", "99999999999TiB", min, max).is_err(), "overflow");
        assert!(parse_size("k", "MiB", min, max).is_err());
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
