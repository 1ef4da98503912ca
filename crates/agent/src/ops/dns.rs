//! dns: the time a name server takes to answer one query (IOS `dns NAME name-server ADDR`), and
//! whether its answer is the one expected. The target is the name to look up; the lookup is the
//! measurement, so it is never resolved beforehand.

use super::{Base, Detail, Fields, GaugeDef, GaugeValue, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, Target, sock};
use ipsla_core::ops::Operation as _;
use ipsla_core::ops::dns::{Answer, DnsConfig, DnsOp, Question, Transport};
use ipsla_net::pacer::{DEFAULT_SPIN, Pacer};
use ipsla_net::probe::{SocketOptions, run_udp, tcp_framed_exchange, udp_socket};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub(super) static KIND: DnsKind = DnsKind;

const KEYS: &[Key] = &[
    Key::new(
        "name_server",
        Ty::Addr,
        "Name server to ask (IOS name-server; default: the first nameserver in /etc/resolv.conf)",
    ),
    Key::new("port", Ty::Int, "The name server's port (default 53)"),
    Key::new("record_type", Ty::Text, "Record type to ask for: A (default), AAAA, MX, NS, PTR, SOA, SRV, TXT, ..."),
    Key::new(
        "expect_answer",
        Ty::Text,
        "The run fails (dnsQueryError) unless a record of the type asked for has this data, e.g. 192.0.2.10",
    ),
    Key::new("recursion", Ty::Bool, "Ask the server to recurse (the RD bit; default true)"),
];

/// Where the host's resolver configuration names its name servers.
pub(super) const RESOLV_CONF: &str = "/etc/resolv.conf";

pub(super) struct DnsKind;

/// A validated dns operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns {
    /// What to ask.
    pub question: Question,
    /// The name server (its port is the operation's `port`).
    pub server: IpAddr,
    /// The data a record of the asked type must have.
    pub expect: Option<String>,
    /// The RD bit.
    pub recursion: bool,
}

/// The first `nameserver` line of a resolv.conf text.
fn first_nameserver(text: &str) -> Option<IpAddr> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver")).then(|| w.next()?.split('%').next()?.parse().ok()).flatten()
    })
}

impl Kind for DnsKind {
    fn name(&self) -> &'static str {
        "dns"
    }
    fn about(&self) -> &'static str {
        "The time a name server takes to answer one query, and whether the answer is right"
    }
    fn example(&self) -> &'static str {
        "ipsla probe dns www.example.com --name-server 192.0.2.53 --expect-answer 192.0.2.10      (lookup time and answer)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        Some(53)
    }
    fn resolves_target(&self) -> bool {
        false
    }
    fn build(&self, f: &Fields, base: &Base) -> Result<Box<dyn Operation>> {
        let Target::Name(name) = &base.target else { unreachable!("dns keeps its target as written") };
        let record_type = f.text("record_type")?.unwrap_or("A");
        let question = Question::new(name, record_type).map_err(|e| {
            let key = if e.contains("record type") { "record_type" } else { "target" };
            f.error(key, e)
        })?;
        let server = match f.addr("name_server")? {
            Some(a) => a,
            // the host's resolver: a file read, which an offline validation does not make
            None if crate::config::offline() => {
                return Err(f.error("name_server", "not set (and the host's resolver is not read offline)"));
            }
            None => host_name_server()
                .map_err(|why| f.error("name_server", format!("not set, and {why}; give the name server to ask")))?,
        };
        Ok(Box::new(Dns {
            question,
            server,
            expect: f.text("expect_answer")?.map(str::to_string),
            recursion: f.bool("recursion")?.unwrap_or(true),
        }))
    }
    fn text(&self, detail: &Detail, w: &mut String) {
        let Some(d) = DnsDetail::of(detail) else { return };
        let _ = writeln!(w, "DNS query: {} {} to {}", d.name, d.record_type, d.server);
        match &d.answer {
            Some(a) => {
                let data: Vec<&str> = a.answers.iter().map(|r| r.data.as_str()).collect();
                let _ = writeln!(
                    w,
                    "        Response code: {}  Answer records: {}{}  Transport: {}{}",
                    a.rcode,
                    a.answer_count,
                    if data.is_empty() { String::new() } else { format!(" ({})", data.join(", ")) },
                    match a.transport {
                        Transport::Udp => "UDP",
                        Transport::Tcp => "TCP (the UDP answer was truncated)",
                    },
                    if a.authoritative { "  Authoritative" } else { "" },
                );
            }
            None => {
                let _ = writeln!(w, "        Response code: none (no answer)");
            }
        }
        if d.ignored > 0 {
            let _ = writeln!(w, "        Datagrams ignored: {} ({} not DNS)", d.ignored, d.malformed);
        }
    }
    fn gauges(&self) -> &'static [GaugeDef] {
        &[
            GaugeDef {
                name: "dns_answer_records",
                help: "Records in the answer section of the latest dns run's answer (absent without an answer)",
            },
            GaugeDef { name: "dns_response_code", help: "1 for the response code of the latest dns run's answer" },
        ]
    }
    fn gauge_values(&self, detail: &Detail) -> Vec<GaugeValue> {
        let Some(a) = DnsDetail::of(detail).and_then(|d| d.answer) else { return Vec::new() };
        vec![
            GaugeValue { family: "dns_answer_records", labels: Vec::new(), value: a.answer_count as f64 },
            GaugeValue { family: "dns_response_code", labels: vec![("rcode", a.rcode)], value: 1.0 },
        ]
    }
}

/// The dns part of a report: `"dns": {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsDetail {
    /// The name asked for.
    pub name: String,
    /// The record type asked for.
    pub record_type: String,
    /// The name server, `address:port`.
    pub server: SocketAddr,
    /// The answer that settled the run; `null` when none came.
    pub answer: Option<Answer>,
    /// Datagrams from the server that were not the answer to our query.
    pub ignored: u32,
    /// Of those, the ones that were not a DNS message.
    pub malformed: u32,
}

impl DnsDetail {
    /// Reads it back from a report's detail.
    fn of(detail: &Detail) -> Option<DnsDetail> {
        serde_json::from_value(detail.get("dns")?.clone()).ok()
    }

    fn into_detail(self) -> Detail {
        let mut d = Detail::new();
        d.insert("dns".into(), serde_json::to_value(self).unwrap_or_default());
        d
    }
}

impl Operation for Dns {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("Target host name", self.question_text()));
        out.push(("Name server", self.server.to_string()));
        out.push(("Record type", self.question.record_type()));
        out.push(("Recursion desired", self.recursion.to_string()));
        out.push(("Expected answer", self.expect.clone().unwrap_or_else(|| "any".into())));
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let cfg = DnsConfig {
            question: self.question.clone(),
            recursion_desired: self.recursion,
            expect: self.expect.clone(),
            server: SocketAddr::new(self.server, spec.port),
            id: rand::random(),
            timeout: spec.timeout,
            threshold: spec.threshold,
        };
        let l = lookup(cfg, &spec.sockets, ctx)?;
        Ok(RunOutcome::with_detail(l.result, l.detail.into_detail()))
    }
}

/// One lookup as the dns operation makes it, and as http makes its DNS phase: its result and
/// its part of the report.
pub(super) struct Lookup {
    /// The lookup's result: its RTT, its return code and why it failed.
    pub result: ipsla_core::ops::OperationResult,
    /// What was asked and answered.
    pub detail: DnsDetail,
}

/// Asks `cfg.server` `cfg.question` over UDP from a socket with `sockets`, again over TCP when
/// the answer is truncated, on the calling thread (TCP on `ctx.rt`).
pub(super) fn lookup(
    cfg: DnsConfig,
    sockets: &SocketOptions,
    ctx: &RunContext<'_>,
) -> std::result::Result<Lookup, RunError> {
    let server = cfg.server;
    let (s, _, _) = sock("opening the DNS socket", udp_socket(server.ip(), sockets))?;
    let (name, record_type) = (cfg.question.text().to_string(), cfg.question.record_type());
    let mut op = DnsOp::new(Instant::now(), cfg);
    // no control phase: every datagram from the server is an answer (control port 0)
    let mut result = run_udp(&mut op, &s, server.ip(), 0, &Pacer::new(DEFAULT_SPIN), ctx.hooks)?;
    if let Some((framed, deadline)) = op.tcp_query() {
        let answer = ctx.rt.block_on(tcp_framed_exchange(server, sockets, &framed, deadline));
        match &answer {
            Ok((bytes, rx)) => op.handle_tcp(Instant::now(), Ok((bytes, *rx))),
            Err(e) => op.handle_tcp(Instant::now(), Err((e.timed_out, e.why.clone()))),
        }
        ctx.hooks.forward(&mut op);
        let udp_stamps = (result.stamps.rx_delta, result.stamps.tx_delta);
        result = op.result();
        (result.stamps.rx_delta, result.stamps.tx_delta) = udp_stamps;
    }
    let (ignored, malformed) = op.ignored();
    let detail = DnsDetail { name, record_type, server, answer: op.answer().cloned(), ignored, malformed };
    Ok(Lookup { result, detail })
}

/// The host's resolver: the first `nameserver` of /etc/resolv.conf, or why there is none.
pub(super) fn host_name_server() -> std::result::Result<IpAddr, String> {
    let text = std::fs::read_to_string(RESOLV_CONF).map_err(|e| format!("cannot read {RESOLV_CONF} ({e})"))?;
    first_nameserver(&text).ok_or_else(|| format!("{RESOLV_CONF} names no nameserver"))
}

impl Dns {
    fn question_text(&self) -> String {
        self.question.text().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::first_nameserver;

    #[test]
    fn the_first_nameserver_line_counts() {
        let conf = "# generated\nsearch example\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\n";
        assert_eq!(first_nameserver(conf), Some("fe80::1".parse().unwrap()));
        assert_eq!(
            first_nameserver("options ndots:2\nnameserver 192.0.2.53 # a comment\n"),
            Some("192.0.2.53".parse().unwrap())
        );
        assert_eq!(first_nameserver("nameserverx 1.2.3.4\n"), None);
    }
}
