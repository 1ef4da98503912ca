//! The AgentX session with the master agent (RFC 2741 §7): open, register the RTTMON subtree,
//! answer requests until the master closes or goes away, then again after a backoff.

use super::mib::{RTTMON, Uptime, View};
use super::{Master, SnmpConfig, Source};
use ipsla_wire::agentx::{
    self, Emit, HEADER_LEN, Header, Message, Oid, Pdu, SearchRange, Value, VarBind, close, error,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the master has to answer our Open and Register, and to accept a connection.
const ANSWER: Duration = Duration::from_secs(5);
/// The view is rebuilt when a run is stored, a reload happens, or it is older than this (the
/// life counters move every second).
const VIEW_AGE: Duration = Duration::from_secs(1);
/// A GetBulk answer holds at most this many varbinds.
const MAX_BULK: usize = 1000;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(
        "cannot connect to the master agent at {master} (snmp.agentx): {source}; check that snmpd runs with `master agentx` and `agentXSocket {master}`{perm}"
    )]
    Connect { master: Master, source: std::io::Error, perm: &'static str },
    #[error("the connection to the master agent at {master} failed: {source}")]
    Io { master: Master, source: std::io::Error },
    #[error("the master agent at {master} sent a PDU that does not parse ({source}); reconnecting")]
    Parse { master: Master, source: ipsla_wire::Error },
    #[error("the master agent at {master} refused the {what} with AgentX error {code}{hint}")]
    Refused { master: Master, what: &'static str, code: u16, hint: &'static str },
    #[error("the master agent at {master} did not answer the {what} within {} s", ANSWER.as_secs())]
    NoAnswer { master: Master, what: &'static str },
}

/// How a session that worked ended.
enum Ended {
    /// The agent is stopping.
    Stopped,
    /// The master closed the session (its reason, [`close`]).
    ByMaster(u8),
}

/// Runs sessions until `stop` is cancelled, reconnecting with backoff. One warning per outage
/// (the cause, where, what to check); the attempts in between are logged at debug.
pub async fn run(
    cfg: SnmpConfig,
    src: Arc<dyn Source>,
    mut traps: tokio::sync::mpsc::Receiver<super::Trap>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut outage = false;
    loop {
        match session(&cfg, &src, &mut traps, &stop, &mut outage).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::ByMaster(reason)) => {
                tracing::warn!(master = %cfg.master, reason, "SNMP: the master agent closed the AgentX session; reconnecting");
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                if outage {
                    tracing::debug!(error = %e, "SNMP: still no AgentX session");
                } else {
                    tracing::warn!("SNMP: {e}. Retrying, at least every {} s", MAX_BACKOFF.as_secs());
                    outage = true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(master: &Master) -> std::io::Result<Box<dyn Stream>> {
    let s: Box<dyn Stream> = match master {
        Master::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        Master::Tcp(addr) => {
            let s = tokio::time::timeout(ANSWER, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5 s"))??;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    };
    Ok(s)
}

/// Reads one PDU: the header, then exactly its payload.
async fn read_pdu(s: &mut Box<dyn Stream>, master: &Master) -> Result<Message, SessionError> {
    let io = |source| SessionError::Io { master: master.clone(), source };
    let parse = |source| SessionError::Parse { master: master.clone(), source };
    let mut buf = vec![0u8; HEADER_LEN];
    s.read_exact(&mut buf).await.map_err(io)?;
    let h = Header::parse(&buf).map_err(parse)?;
    buf.resize(HEADER_LEN + h.payload_len as usize, 0);
    s.read_exact(&mut buf[HEADER_LEN..]).await.map_err(io)?;
    agentx::parse(&buf).map_err(parse)
}

/// Sends `pdu` and waits for the master's Response to it (other PDUs meanwhile are dropped: the
/// master sends none before the session is registered).
async fn request(
    s: &mut Box<dyn Stream>,
    master: &Master,
    what: &'static str,
    pdu: &[u8],
    packet_id: u32,
) -> Result<(Header, u32), SessionError> {
    let io = |source| SessionError::Io { master: master.clone(), source };
    s.write_all(pdu).await.map_err(io)?;
    let answer = async {
        loop {
            let m = read_pdu(s, master).await?;
            if let Pdu::Response { sys_uptime, error, .. } = m.pdu
                && m.header.packet_id == packet_id
            {
                return Ok((m.header, sys_uptime, error));
            }
        }
    };
    let (h, uptime, code) = tokio::time::timeout(ANSWER, answer)
        .await
        .map_err(|_| SessionError::NoAnswer { master: master.clone(), what })??;
    if code != error::NO_ERROR {
        let hint = match code {
            error::DUPLICATE_REGISTRATION => {
                " (duplicateRegistration: another subagent, perhaps a second ipsla agent, serves 1.3.6.1.4.1.9.9.42)"
            }
            error::OPEN_FAILED => " (openFailed: see the master's log)",
            _ => "",
        };
        return Err(SessionError::Refused { master: master.clone(), what, code, hint });
    }
    Ok((h, uptime))
}

async fn session(
    cfg: &SnmpConfig,
    src: &Arc<dyn Source>,
    traps: &mut tokio::sync::mpsc::Receiver<super::Trap>,
    stop: &CancellationToken,
    outage: &mut bool,
) -> Result<Ended, SessionError> {
    let master = &cfg.master;
    let mut s = connect(master).await.map_err(|source| {
        let perm = if source.kind() == std::io::ErrorKind::PermissionDenied {
            ", and that its agentXPerms let this user open the socket"
        } else {
            ""
        };
        SessionError::Connect { master: master.clone(), source, perm }
    })?;
    let subtree = Oid(RTTMON.to_vec());
    let open = Emit::new(0, 0, 1).open(0, &subtree, b"ipsla agent: CISCO-RTTMON-MIB");
    let (h, centis) = request(&mut s, master, "Open", &open, 1).await?;
    let session_id = h.session_id;
    let uptime = Uptime { centis, wall_ns: ipsla_net::clock::wall_now().as_nanos() as i64 };
    let register = Emit::new(session_id, 0, 2).register(0, 127, &subtree);
    request(&mut s, master, "Register of 1.3.6.1.4.1.9.9.42", &register, 2).await?;
    tracing::info!(master = %master, session = session_id, "SNMP: CISCO-RTTMON-MIB (1.3.6.1.4.1.9.9.42) registered with the master agent");
    *outage = false;
    let io = |source| SessionError::Io { master: master.clone(), source };
    let mut cache = Cache::default();
    let mut packet_id = 2u32;
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => {
                let bye = Emit::new(session_id, 0, packet_id + 1).close(close::SHUTDOWN);
                let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(&bye)).await;
                return Ok(Ended::Stopped);
            }
            Some(t) = traps.recv() => {
                // the master answers with a Response, read (and dropped) by the loop
                packet_id = packet_id.wrapping_add(1);
                let notify = Emit::new(session_id, 0, packet_id).notify(&t.varbinds());
                s.write_all(&notify).await.map_err(io)?;
                continue;
            }
            m = read_pdu(&mut s, master) => m?,
        };
        let reply = Emit::reply_to(&m.header);
        let out = match &m.pdu {
            _ if m.context.is_some() => Some(reply.response(error::UNSUPPORTED_CONTEXT, 0, &[])),
            Pdu::Get(_) | Pdu::GetNext(_) | Pdu::GetBulk { .. } => {
                let view = cache.view(src, uptime).await;
                Some(reply.response(error::NO_ERROR, 0, &answer(&view, &m.pdu)))
            }
            // read-only: the first varbind is not writable (CleanupSet, which follows, has no reply)
            Pdu::TestSet(_) => Some(reply.response(error::NOT_WRITABLE, 1, &[])),
            Pdu::SetPhase if m.header.ty == agentx::ty::CLEANUP_SET => None,
            Pdu::SetPhase => Some(reply.response(error::GEN_ERR, 0, &[])),
            Pdu::Close(reason) => return Ok(Ended::ByMaster(*reason)),
            Pdu::Response { .. } => None,
            Pdu::Other => Some(reply.response(error::PROCESSING_ERROR, 0, &[])),
        };
        if let Some(out) = out {
            s.write_all(&out).await.map_err(io)?;
        }
    }
}

/// The answer to a Get, GetNext or GetBulk (RFC 2741 §7.2.3).
pub fn answer(view: &View, pdu: &Pdu) -> Vec<VarBind> {
    let next = |r: &SearchRange| match view.next(r) {
        Some((name, value)) => VarBind { name: name.clone(), value: value.clone() },
        None => VarBind { name: r.start.clone(), value: Value::EndOfMibView },
    };
    match pdu {
        Pdu::Get(ranges) => {
            ranges.iter().map(|r| VarBind { name: r.start.clone(), value: view.get(&r.start) }).collect()
        }
        Pdu::GetNext(ranges) => ranges.iter().map(next).collect(),
        Pdu::GetBulk { non_repeaters, max_repetitions, ranges } => {
            let n = (*non_repeaters as usize).min(ranges.len());
            let mut out: Vec<VarBind> = ranges[..n].iter().map(next).collect();
            let mut cur = ranges[n..].to_vec();
            for _ in 0..*max_repetitions {
                if cur.is_empty() || out.len() + cur.len() > MAX_BULK {
                    break;
                }
                let mut all_ended = true;
                for r in cur.iter_mut() {
                    let vb = next(r);
                    if vb.value != Value::EndOfMibView {
                        all_ended = false;
                        r.start = vb.name.clone();
                        r.include = false;
                    }
                    out.push(vb);
                }
                if all_ended {
                    break;
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The latest view, rebuilt when the agent's generation changed or it is older than a second.
#[derive(Default)]
struct Cache {
    view: Arc<View>,
    generation: u64,
    built: Option<Instant>,
}

impl Cache {
    async fn view(&mut self, src: &Arc<dyn Source>, uptime: Uptime) -> Arc<View> {
        let generation = src.generation();
        let fresh = self.built.is_some_and(|t| t.elapsed() < VIEW_AGE);
        if fresh && generation == self.generation {
            return self.view.clone();
        }
        let s = src.clone();
        let built = tokio::task::spawn_blocking(move || {
            let rows = s.rows()?;
            Some(View::build(&rows, s.responder(), Some(uptime)))
        })
        .await;
        if let Ok(Some(v)) = built {
            self.view = Arc::new(v);
            self.generation = generation;
            self.built = Some(Instant::now());
        }
        self.view.clone()
    }
}
