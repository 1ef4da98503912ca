//! twamp: TWAMP (RFC 5357) — TWAMP-Control to the server at the operation's port, then one
//! TWAMP-Test session in the open, authenticated, encrypted or mixed (RFC 5618) mode, with
//! udp-jitter's statistics.

use super::common::{CLOCK, ClockSync, TRAIN, train};
use super::configuration::train_line;
use super::{Base, Fields, Flag, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, sock};
use ipsla_core::ops::stamp::{SenderFormat, TwampFormat};
use ipsla_core::twamp::KeyFile;
use ipsla_core::twamp::client::{ConfigError as ClientConfigError, DEFAULT_SESSION_TIMEOUT, MAX_PADDING, Secret};
use ipsla_net::twamp::client::{TwampOptions, run_twamp};
use ipsla_wire::twamp::SecurityMode;
use std::net::SocketAddr;
use std::time::Duration;

/// `port`: what listens there depends on the kind, so each kind says it (`--port` help).
const PORT: &[Key] = &[Key::new(
    "port",
    Ty::Int,
    "TCP port of the TWAMP-Control server (default 862, RFC 5357); the test session's UDP ports are negotiated",
)];

pub(super) static KIND: TwampKind = TwampKind;

/// The security mode key (twamp and twamp-light).
pub(super) const MODE: Key = Key::new(
    "mode",
    Ty::Choice(&["open", "auth", "encrypted", "mixed"]),
    "Security mode: open (default), auth, encrypted or mixed (the server must offer it)",
);

const KEYS: &[Key] = &[
    MODE,
    Key::new("twamp_key_id", Ty::Text, "Identity in secret_file (twping -u)").flag(Flag::Named("key-id")),
    Key::new("secret_file", Ty::Path, "twampd pass-phrase file: `identity hex(passphrase)` per line (twping -k)"),
    Key::new(
        "padding",
        Ty::Int,
        "Padding octets per test packet (default 27 in open/mixed mode, 64 in auth/encrypted: the same size both ways)",
    ),
];

pub(super) struct TwampKind;

/// A validated twamp operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Twamp {
    /// Test packets per run.
    pub packets: u32,
    /// Interval.
    pub interval: Duration,
    /// The one security mode asked for.
    pub mode: SecurityMode,
    /// Identity and passphrase for the authenticated, encrypted and mixed modes.
    pub secret: Option<Secret>,
    /// Padding Length; `None` = symmetric (27 open/mixed, 64 authenticated/encrypted).
    pub padding: Option<u32>,
    /// Clock synchronisation.
    pub clock: ClockSync,
}

/// Why the TWAMP kinds refuse the IP SLA control keys; `key_id` is the Cisco v2 key number,
/// which a TWAMP identity (a string) is easily confused with.
pub(super) fn refuses_ip_sla_key(key: &str) -> Option<&'static str> {
    match key {
        "control" => Some("twamp runs TWAMP-Control on `port`, twamp-light no control at all"),
        "control_port" => Some("the TWAMP-Control port is `port`"),
        "auth" => Some("the TWAMP security mode is `mode`"),
        "key_id" => Some("key_id is the Cisco v2 key number; a TWAMP identity goes in twamp_key_id"),
        _ => None,
    }
}

/// The identity `id` of a twampd-format key file (`identity hex(passphrase)` lines, reference §3.1).
fn twamp_secret(f: &Fields, id: &str, path: &std::path::Path) -> Result<Secret> {
    let text = crate::config::read_text(&f.key("secret_file"), path, crate::config::MAX_KEY_FILE_LEN)?;
    let file = KeyFile::parse(&text).map_err(|e| {
        f.error("secret_file", format!("{}: {e} (expected twampd's `identity hex-passphrase` lines)", path.display()))
    })?;
    Secret::from_key_file(&file, id).map_err(|e| match e {
        ClientConfigError::UnknownIdentity(_) => {
            f.error("twamp_key_id", format!("\"{id}\" is not an identity of {}", path.display()))
        }
        ClientConfigError::BadKeyId(_) => {
            f.error("twamp_key_id", format!("\"{id}\" is not usable: at most 80 octets, no NUL"))
        }
        e => f.error("secret_file", format!("{}: {e}", path.display())),
    })
}

impl Kind for TwampKind {
    fn name(&self) -> &'static str {
        "twamp"
    }
    fn about(&self) -> &'static str {
        "TWAMP (RFC 5357): TWAMP-Control to the server (TCP, --port, default 862), then one TWAMP-Test session (open, authenticated, encrypted or mixed mode)"
    }
    fn example(&self) -> &'static str {
        "ipsla probe twamp 192.0.2.10 --mode auth --key-id alice --secret-file /etc/ipsla/twamp-keys      (a TWAMP server on TCP 862)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[PORT, TRAIN, CLOCK, KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        Some(ipsla_wire::twamp::CONTROL_PORT)
    }
    fn jitter(&self) -> bool {
        true
    }
    fn refuses(&self, key: &str) -> Option<&'static str> {
        match key {
            "stateful" => {
                Some("the reflector of a TWAMP-Control session is always stateful; stateful is a twamp-light key")
            }
            _ => refuses_ip_sla_key(key),
        }
    }
    fn build(&self, f: &Fields, _base: &Base) -> Result<Box<dyn Operation>> {
        let (packets, interval) = train(f, 10, Duration::from_millis(20))?;
        let mode = f.choose(
            "mode",
            SecurityMode::Unauthenticated,
            &[
                ("open", SecurityMode::Unauthenticated),
                ("auth", SecurityMode::Authenticated),
                ("encrypted", SecurityMode::Encrypted),
                ("mixed", SecurityMode::Mixed),
            ],
        )?;
        let padding = f.int::<u32>("padding")?;
        if let Some(p) = padding {
            crate::config::check_range(&f.key("padding"), p, 0, MAX_PADDING)?;
        }
        let name = ipsla_core::twamp::client::security_name(mode);
        let open = mode == SecurityMode::Unauthenticated;
        let secret = match (f.text("twamp_key_id")?, f.path("secret_file")?) {
            (None, None) if open => None,
            (id, _) if open => {
                let key = if id.is_some() { "twamp_key_id" } else { "secret_file" };
                return Err(f.error(
                    key,
                    format!(
                        "the open mode uses no key; set {} = auth, encrypted or mixed, or remove {} and {}",
                        f.short("mode"),
                        f.short("twamp_key_id"),
                        f.short("secret_file")
                    ),
                ));
            }
            (Some(id), Some(p)) => Some(twamp_secret(f, id, &p)?),
            (None, _) => {
                return Err(f.error(
                    "twamp_key_id",
                    format!(
                        "mode {name} needs {} (an identity of {})",
                        f.short("twamp_key_id"),
                        f.short("secret_file")
                    ),
                ));
            }
            (_, None) => {
                return Err(f.error(
                    "secret_file",
                    format!(
                        "mode {name} needs {} (twampd format: `identity hex-passphrase` lines)",
                        f.short("secret_file")
                    ),
                ));
            }
        };
        Ok(Box::new(Twamp { packets, interval, mode, secret, padding, clock: ClockSync::from_fields(f)? }))
    }
}

impl Operation for Twamp {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(train_line(self.interval, self.packets));
        out.push(("TWAMP mode", format!("{:?}", self.mode)));
        out.push(("Padding (octets)", self.padding.map_or("default".into(), |p| p.to_string())));
        self.clock.describe(out);
    }
    fn train(&self) -> Option<(u32, Duration)> {
        Some((self.packets, self.interval * self.packets))
    }
    fn control_label(&self) -> &'static str {
        "twamp"
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let (sync, mut clock) = self.clock.check();
        let opts = TwampOptions {
            allowed: self.mode.bit(),
            secret: self.secret.clone(),
            padding: self.padding,
            dscp: spec.sockets.tos.map_or(0, |tos| tos >> 2),
            reflect: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            control_timeout: spec.timeout,
            sockets: spec.sockets.clone(),
            // the driver sets the format the session negotiates
            sender: super::stamp::sender(
                spec,
                (self.packets, self.interval),
                SenderFormat::Twamp(Box::new(TwampFormat::light(0))),
                true,
                sync,
            ),
        };
        let out = sock(
            "opening the Session-Sender socket",
            ctx.rt.block_on(run_twamp(SocketAddr::new(spec.addr(), spec.port), &opts, ctx.hooks)),
        )?;
        if out.cancelled {
            return Err(RunError::Cancelled);
        }
        let mut result = out.result;
        self.clock.apply(&mut result, &mut clock);
        Ok(RunOutcome { result, clock, detail: Default::default() })
    }
}
