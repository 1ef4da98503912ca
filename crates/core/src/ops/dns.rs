//! dns: one query to a name server (IOS `dns NAME name-server ADDR`), over UDP, again over TCP
//! when the UDP answer is truncated. RTT is the time from the query to the answer that settled
//! it (both exchanges when it fell back to TCP). The message format is hickory-proto's.
//!
//! The server answered, but not as asked (an error code, no record of the type asked for, not
//! the expected address): dnsQueryError, with the RTT of that answer. No answer: dnsServerTimeout.
//! Datagrams that are not the answer to our query (another id, another question, not a DNS
//! message at all) are counted and ignored: a forged or garbled datagram cannot end the run;
//! when nothing but garbage came, the run is a dnsQueryError that says so.

use super::{Cause, Events, Operation, OperationResult, Peer, ProbeEvent, ReturnCode, StampSources, Transmit};
use crate::io::RxTime;
use crate::stats::Sample;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The most answer records a result lists (all are counted).
pub const MAX_LISTED: usize = 32;

/// What to ask: a name and a record type, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Fully qualified, as it goes on the wire.
    name: Name,
    /// As written, without the root's dot: for the words.
    text: String,
    record_type: RecordType,
}

impl Question {
    /// `name` (a domain name; a trailing dot is allowed) and `record_type` (`A`, `AAAA`, `MX`,
    /// ...), or what is wrong with them.
    pub fn new(name: &str, record_type: &str) -> Result<Question, String> {
        let mut parsed = Name::from_ascii(name).map_err(|e| format!("\"{name}\" is not a domain name ({e})"))?;
        parsed.set_fqdn(true);
        let t = RecordType::from_str(&record_type.to_ascii_uppercase())
            .ok()
            .filter(|t| !matches!(t, RecordType::Unknown(_) | RecordType::ZERO | RecordType::OPT))
            .ok_or_else(|| {
                format!("\"{record_type}\" is not a DNS record type (A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ...)")
            })?;
        Ok(Question { name: parsed, text: name.trim_end_matches('.').to_string(), record_type: t })
    }

    /// The name as written, without the root's dot.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The record type's name (`AAAA`).
    pub fn record_type(&self) -> String {
        self.record_type.to_string()
    }
}

/// A dns operation's parameters.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// What to ask.
    pub question: Question,
    /// Ask the server to recurse (the RD bit; a resolver needs it, an authoritative server not).
    pub recursion_desired: bool,
    /// The run is a dnsQueryError unless a record of the asked type has this data (`192.0.2.1`).
    pub expect: Option<String>,
    /// The name server.
    pub server: SocketAddr,
    /// The message id (random per run, from the caller).
    pub id: u16,
    /// Timeout for the whole lookup.
    pub timeout: Duration,
    /// RTT threshold.
    pub threshold: Duration,
}

/// How the answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One UDP exchange.
    Udp,
    /// UDP was truncated; the answer came over TCP.
    Tcp,
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Owner name.
    pub name: String,
    /// Record type (`A`).
    #[serde(rename = "type")]
    pub record_type: String,
    /// TTL, s.
    pub ttl: u32,
    /// The data as text (`192.0.2.1`).
    pub data: String,
}

/// The answer that settled the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Response code (`NoError`, `NXDomain`, `ServFail`, ...).
    pub rcode: String,
    /// The AA bit.
    pub authoritative: bool,
    /// Records in the answer section (all of them).
    pub answer_count: usize,
    /// The first [`MAX_LISTED`] answer records.
    pub answers: Vec<Record>,
    /// How it came.
    pub transport: Transport,
}

#[derive(Debug, Clone)]
enum Phase {
    Send,
    Wait {
        deadline: Instant,
    },
    /// The UDP answer was truncated: the driver asks again over TCP ([`DnsOp::tcp_query`]).
    Tcp {
        deadline: Instant,
    },
    Done,
}

/// The dns state machine: the UDP exchange through [`Operation`], the TCP one through
/// [`DnsOp::tcp_query`] and [`DnsOp::handle_tcp`].
#[derive(Debug, Clone)]
pub struct DnsOp {
    cfg: DnsConfig,
    query: Vec<u8>,
    phase: Phase,
    t1: Duration,
    t1_kernel: Option<Duration>,
    sent_at: Option<Instant>,
    sample: Option<Sample>,
    failure: Option<ReturnCode>,
    cause: Option<Cause>,
    answer: Option<Answer>,
    /// Datagrams that were not the answer to our query.
    ignored: u32,
    /// Of those, the ones that were not a DNS message at all.
    malformed: u32,
    stamps: StampSources,
    result: Option<OperationResult>,
    events: Events,
}

impl DnsOp {
    /// Starts at `now`.
    pub fn new(_now: Instant, cfg: DnsConfig) -> Self {
        let mut m = Message::new(cfg.id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = cfg.recursion_desired;
        m.add_query(Query::query(cfg.question.name.clone(), cfg.question.record_type));
        // a name that parsed always encodes (at most 255 octets): nothing to send otherwise
        let query = m.to_vec().unwrap_or_default();
        DnsOp {
            cfg,
            query,
            phase: Phase::Send,
            t1: Duration::ZERO,
            t1_kernel: None,
            sent_at: None,
            sample: None,
            failure: None,
            cause: None,
            answer: None,
            ignored: 0,
            malformed: 0,
            stamps: StampSources::default(),
            result: None,
            events: Events::default(),
        }
    }

    /// The answer that settled the run, once done (none on a timeout).
    pub fn answer(&self) -> Option<&Answer> {
        self.answer.as_ref()
    }

    /// Datagrams that were not the answer to our query, and how many of them were not DNS at all.
    pub fn ignored(&self) -> (u32, u32) {
        (self.ignored, self.malformed)
    }

    /// The query framed for TCP (RFC 1035 §4.2.2: a two-octet length first) and the deadline of
    /// the exchange, when the UDP answer was truncated and the run waits for it.
    pub fn tcp_query(&self) -> Option<(Vec<u8>, Instant)> {
        let Phase::Tcp { deadline } = self.phase else { return None };
        let mut framed = Vec::with_capacity(self.query.len() + 2);
        framed.extend_from_slice(&(self.query.len() as u16).to_be_bytes());
        framed.extend_from_slice(&self.query);
        Some((framed, deadline))
    }

    /// The TCP exchange ended: the answer's message (without its length) and when it was
    /// complete, or why there is none: `(timed_out, why)`, timed out when the deadline passed,
    /// else what failed (connecting, writing, reading).
    pub fn handle_tcp(&mut self, _now: Instant, answer: Result<(&[u8], RxTime), (bool, String)>) {
        if !matches!(self.phase, Phase::Tcp { .. }) {
            return;
        }
        let server = self.cfg.server;
        match answer {
            Ok((bytes, rx)) => match Message::from_vec(bytes) {
                Ok(m) if self.is_ours(&m) => self.settle(&m, rx, Transport::Tcp),
                Ok(_) => self.fail(
                    ReturnCode::DnsQueryError,
                    format!("{server} answered over TCP with a message that is not the answer to our query"),
                ),
                Err(e) => self.fail(
                    ReturnCode::DnsQueryError,
                    format!("{server} answered over TCP with a malformed DNS message ({e})"),
                ),
            },
            Err((true, _)) => self.fail(
                ReturnCode::DnsServerTimeout,
                format!(
                    "{server} truncated its UDP answer and gave none over TCP within the timeout ({} ms)",
                    self.cfg.timeout.as_millis()
                ),
            ),
            Err((false, why)) => self.fail(
                ReturnCode::DnsServerTimeout,
                format!("{server} truncated its UDP answer, and asking over TCP failed: {why}"),
            ),
        }
    }

    fn is_ours(&self, m: &Message) -> bool {
        let q = &self.cfg.question;
        m.metadata.id == self.cfg.id
            && m.metadata.message_type == MessageType::Response
            && m.queries.len() == 1
            && m.queries[0].name().eq_case(&q.name)
            && m.queries[0].query_type() == q.record_type
    }

    fn fail(&mut self, code: ReturnCode, why: String) {
        self.failure = Some(code);
        self.cause = Some(Cause::Service { reason: why });
        self.finish();
    }

    /// Our answer arrived at `rx`: its RTT from the UDP query, then its verdict.
    fn settle(&mut self, m: &Message, rx: RxTime, transport: Transport) {
        self.stamps.note_rx(rx.kernel);
        self.stamps.note_tx(self.t1_kernel.is_some());
        let t1 = self.t1_kernel.unwrap_or(self.t1);
        let sample = Sample {
            seq: 1,
            rtt: rx.wall.as_nanos() as i64 - t1.as_nanos() as i64,
            t1: t1.as_nanos() as i64,
            t4: rx.wall.as_nanos() as i64,
            ..Sample::default()
        };
        self.sample = Some(sample);
        self.events.reply(sample, false);
        let answer = Answer {
            rcode: format!("{:?}", m.metadata.response_code),
            authoritative: m.metadata.authoritative,
            answer_count: m.answers.len(),
            answers: m
                .answers
                .iter()
                .take(MAX_LISTED)
                .map(|r| Record {
                    name: r.name.to_string(),
                    record_type: r.record_type().to_string(),
                    ttl: r.ttl,
                    data: r.data.to_string(),
                })
                .collect(),
            transport,
        };
        let q = &self.cfg.question;
        let asked = format!("{} {}", q.text, q.record_type);
        let server = self.cfg.server;
        let of_type: Vec<String> =
            m.answers.iter().filter(|r| r.record_type() == q.record_type).map(|r| r.data.to_string()).collect();
        let verdict = if m.metadata.response_code != ResponseCode::NoError {
            Some(format!("{server} answered {} to {asked}", answer.rcode))
        } else if of_type.is_empty() {
            Some(format!(
                "{server} answered {asked} with no {} record ({} other record{} in the answer)",
                q.record_type,
                m.answers.len(),
                if m.answers.len() == 1 { "" } else { "s" }
            ))
        } else {
            match &self.cfg.expect {
                Some(want) if !of_type.iter().any(|d| d.eq_ignore_ascii_case(want)) => {
                    Some(format!("{server} answered {asked} with {}, not the expected {want}", of_type.join(", ")))
                }
                _ => None,
            }
        };
        self.answer = Some(answer);
        match verdict {
            Some(why) => self.fail(ReturnCode::DnsQueryError, why),
            None => self.finish(),
        }
    }

    fn finish(&mut self) {
        self.events.expire_all();
        let mut r = OperationResult::single(
            self.failure,
            self.sent_at.map(|_| self.t1_kernel.unwrap_or(self.t1)),
            self.sample,
            0,
            self.cfg.threshold,
            self.stamps,
            self.ignored,
        );
        r.cause = self.cause.clone();
        self.result = Some(r);
        self.phase = Phase::Done;
    }
}

impl Operation for DnsOp {
    fn poll_transmit(&mut self, now: Instant, wall: Duration, buf: &mut [u8]) -> Option<Transmit> {
        let Phase::Send = self.phase else { return None };
        let len = self.query.len().min(buf.len());
        buf[..len].copy_from_slice(&self.query[..len]);
        self.t1 = wall;
        self.sent_at = Some(now);
        self.events.sent(1, wall, now + self.cfg.timeout);
        self.phase = Phase::Wait { deadline: now + self.cfg.timeout };
        Some(Transmit { peer: Peer::Probe, len, seq: 1 })
    }

    fn handle_datagram(&mut self, _now: Instant, from: Peer, rx: RxTime, bytes: &[u8]) {
        let (Peer::Probe, Phase::Wait { deadline }) = (from, &self.phase) else { return };
        let deadline = *deadline;
        let m = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.ignored += 1;
                self.malformed += 1;
                return;
            }
        };
        if !self.is_ours(&m) {
            self.ignored += 1;
            return;
        }
        if m.metadata.truncation {
            // the rest of the answer comes over TCP, within what is left of the timeout
            self.phase = Phase::Tcp { deadline };
            return;
        }
        self.settle(&m, rx, Transport::Udp);
    }

    fn handle_refused(&mut self, _now: Instant, to: SocketAddr) {
        if let Phase::Wait { .. } = self.phase {
            self.fail(
                ReturnCode::DnsServerTimeout,
                format!(
                    "nothing listens on {to} (ICMP port unreachable): is the name server running there, on that port?"
                ),
            );
        }
    }

    fn handle_tx_stamp(&mut self, seq: u32, wall: Duration) {
        if seq == 1 {
            self.t1_kernel = Some(wall);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Wait { deadline } => Some(deadline),
            Phase::Send | Phase::Tcp { .. } | Phase::Done => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Phase::Wait { deadline } = self.phase else { return };
        if now < deadline {
            return;
        }
        let server = self.cfg.server;
        let ms = self.cfg.timeout.as_millis();
        let why = match (self.ignored, self.malformed) {
            (0, _) => (
                ReturnCode::DnsServerTimeout,
                format!("no answer from {server} in {ms} ms: is a name server listening there and allowed through?"),
            ),
            (n, 0) => (
                ReturnCode::DnsServerTimeout,
                format!(
                    "no answer from {server} to our query in {ms} ms ({n} datagram(s) that answered something else)"
                ),
            ),
            (_, bad) => (
                ReturnCode::DnsQueryError,
                format!("{server} sent {bad} malformed message(s) and no valid answer in {ms} ms"),
            ),
        };
        self.fail(why.0, why.1);
    }

    fn probe_port(&self) -> u16 {
        self.cfg.server.port()
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Tcp { .. })
    }

    fn result(&self) -> OperationResult {
        self.result.clone().unwrap_or_else(|| OperationResult::pending(Default::default(), self.stamps, self.ignored))
    }

    fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{RData, Record as Rr};
    use std::net::Ipv4Addr;

    const SERVER: &str = "127.0.0.1:5353";
    const MS: Duration = Duration::from_millis(1);

    fn op(expect: Option<&str>) -> (DnsOp, Instant) {
        let t0 = Instant::now();
        let cfg = DnsConfig {
            question: Question::new("host.test.example", "a").unwrap(),
            recursion_desired: true,
            expect: expect.map(str::to_string),
            server: SERVER.parse().unwrap(),
            id: 0x1234,
            timeout: Duration::from_secs(2),
            threshold: Duration::from_millis(500),
        };
        (DnsOp::new(t0, cfg), t0)
    }

    fn answer(id: u16, rcode: ResponseCode, records: Vec<Rr>, truncated: bool) -> Vec<u8> {
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.response_code = rcode;
        m.metadata.truncation = truncated;
        m.add_query(Query::query(Name::from_ascii("host.test.example").unwrap(), RecordType::A));
        m.add_answers(records);
        m.to_vec().unwrap()
    }

    fn a(ip: [u8; 4]) -> Rr {
        Rr::from_rdata(Name::from_ascii("host.test.example").unwrap(), 60, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn rx(wall_ms: u64) -> RxTime {
        RxTime { wall: Duration::from_millis(wall_ms), kernel: true }
    }

    /// Sends the query at wall 1000 ms and returns its bytes.
    fn send(o: &mut DnsOp, t0: Instant) -> Vec<u8> {
        let mut buf = [0u8; 512];
        let t = o.poll_transmit(t0, Duration::from_millis(1000), &mut buf).unwrap();
        assert_eq!((t.peer, t.seq), (Peer::Probe, 1));
        buf[..t.len].to_vec()
    }

    #[test]
    fn the_query_asks_what_was_configured() {
        let (mut o, t0) = op(None);
        let q = Message::from_vec(&send(&mut o, t0)).unwrap();
        assert_eq!(
            (q.metadata.id, q.metadata.message_type, q.metadata.recursion_desired),
            (0x1234, MessageType::Query, true)
        );
        assert_eq!(q.queries.len(), 1);
        assert_eq!(
            (q.queries[0].name().to_string(), q.queries[0].query_type()),
            ("host.test.example.".into(), RecordType::A)
        );
        assert!(o.poll_transmit(t0, Duration::ZERO, &mut [0u8; 512]).is_none(), "one query per run");
    }

    #[test]
    fn an_answer_gives_its_rtt_and_records() {
        let (mut o, t0) = op(Some("192.0.2.7"));
        send(&mut o, t0);
        o.handle_datagram(
            t0 + 3 * MS,
            Peer::Probe,
            rx(1003),
            &answer(0x1234, ResponseCode::NoError, vec![a([192, 0, 2, 7])], false),
        );
        assert!(o.is_done());
        let r = o.result();
        assert_eq!(r.return_code, ReturnCode::Ok);
        assert_eq!((r.stats.rtt.count, r.stats.rtt.min), (1, 3_000_000));
        let ans = o.answer().unwrap();
        assert_eq!((ans.rcode.as_str(), ans.answer_count, ans.transport), ("NoError", 1, Transport::Udp));
        assert_eq!(
            ans.answers[0],
            Record { name: "host.test.example.".into(), record_type: "A".into(), ttl: 60, data: "192.0.2.7".into() }
        );
    }

    #[test]
    fn forged_and_garbled_datagrams_are_counted_and_ignored() {
        let (mut o, t0) = op(None);
        send(&mut o, t0);
        // another id, a query instead of a response, garbage, an empty datagram
        o.handle_datagram(
            t0,
            Peer::Probe,
            rx(1001),
            &answer(0x9999, ResponseCode::NoError, vec![a([10, 0, 0, 1])], false),
        );
        let mut as_query = Message::from_vec(&answer(0x1234, ResponseCode::NoError, vec![], false)).unwrap();
        as_query.metadata.message_type = MessageType::Query;
        o.handle_datagram(t0, Peer::Probe, rx(1001), &as_query.to_vec().unwrap());
        o.handle_datagram(t0, Peer::Probe, rx(1001), &[0xff; 40]);
        o.handle_datagram(t0, Peer::Probe, rx(1001), &[]);
        assert!(!o.is_done());
        assert_eq!(o.ignored(), (4, 2));
        o.handle_datagram(
            t0,
            Peer::Probe,
            rx(1005),
            &answer(0x1234, ResponseCode::NoError, vec![a([192, 0, 2, 7])], false),
        );
        let r = o.result();
        assert_eq!((r.return_code, r.unexpected, r.stats.rtt.min), (ReturnCode::Ok, 4, 5_000_000));
    }

    #[test]
    fn only_garbage_is_a_query_error_and_silence_a_server_timeout() {
        let (mut o, t0) = op(None);
        send(&mut o, t0);
        o.handle_datagram(t0, Peer::Probe, rx(1001), b"\x12\x34garbage");
        o.handle_timeout(t0 + Duration::from_secs(2));
        let r = o.result();
        assert_eq!((r.return_code, r.stats.rtt.count), (ReturnCode::DnsQueryError, 0));
        assert_eq!(
            r.cause.unwrap().to_string(),
            "127.0.0.1:5353 sent 1 malformed message(s) and no valid answer in 2000 ms"
        );
        let (mut o, t0) = op(None);
        send(&mut o, t0);
        o.handle_timeout(t0 + Duration::from_secs(1));
        assert!(!o.is_done(), "not before the timeout");
        o.handle_timeout(t0 + Duration::from_secs(2));
        let r = o.result();
        assert_eq!((r.return_code, r.stats.rtt.count), (ReturnCode::DnsServerTimeout, 0));
        assert_eq!(
            r.cause.unwrap().to_string(),
            "no answer from 127.0.0.1:5353 in 2000 ms: is a name server listening there and allowed through?"
        );
    }

    #[test]
    fn wrong_answers_are_query_errors_with_their_rtt() {
        let cases = [
            (ResponseCode::NXDomain, vec![], None, "127.0.0.1:5353 answered NXDomain to host.test.example A"),
            (
                ResponseCode::NoError,
                vec![Rr::from_rdata(
                    Name::from_ascii("host.test.example").unwrap(),
                    5,
                    RData::CNAME(CNAME(Name::from_ascii("other.example").unwrap())),
                )],
                None,
                "127.0.0.1:5353 answered host.test.example A with no A record (1 other record in the answer)",
            ),
            (
                ResponseCode::NoError,
                vec![a([192, 0, 2, 8]), a([192, 0, 2, 9])],
                Some("192.0.2.7"),
                "127.0.0.1:5353 answered host.test.example A with 192.0.2.8, 192.0.2.9, not the expected 192.0.2.7",
            ),
        ];
        for (rcode, records, expect, why) in cases {
            let (mut o, t0) = op(expect);
            send(&mut o, t0);
            o.handle_datagram(t0, Peer::Probe, rx(1002), &answer(0x1234, rcode, records, false));
            let r = o.result();
            assert_eq!((r.return_code, r.stats.rtt.min), (ReturnCode::DnsQueryError, 2_000_000), "{why}");
            assert_eq!(r.cause.unwrap().to_string(), why);
        }
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        let (mut o, t0) = op(None);
        let query = send(&mut o, t0);
        assert!(o.tcp_query().is_none());
        o.handle_datagram(t0, Peer::Probe, rx(1001), &answer(0x1234, ResponseCode::NoError, vec![], true));
        assert!(o.is_done(), "the UDP driver is done");
        let (framed, deadline) = o.tcp_query().unwrap();
        assert_eq!(
            (framed[..2].to_vec(), &framed[2..]),
            ((query.len() as u16).to_be_bytes().to_vec(), query.as_slice())
        );
        assert_eq!(deadline, t0 + Duration::from_secs(2));
        let full = answer(0x1234, ResponseCode::NoError, vec![a([192, 0, 2, 7])], false);
        o.handle_tcp(t0, Ok((&full, rx(1009))));
        let r = o.result();
        assert_eq!((r.return_code, r.stats.rtt.min), (ReturnCode::Ok, 9_000_000), "RTT covers both exchanges");
        assert_eq!(o.answer().unwrap().transport, Transport::Tcp);
        assert!(o.tcp_query().is_none());

        let (mut o, t0) = op(None);
        send(&mut o, t0);
        o.handle_datagram(t0, Peer::Probe, rx(1001), &answer(0x1234, ResponseCode::NoError, vec![], true));
        o.handle_tcp(t0, Err((false, "connection refused".into())));
        let r = o.result();
        assert_eq!((r.return_code, r.stats.rtt.count), (ReturnCode::DnsServerTimeout, 0));
        assert_eq!(
            r.cause.unwrap().to_string(),
            "127.0.0.1:5353 truncated its UDP answer, and asking over TCP failed: connection refused"
        );
    }

    #[test]
    fn questions_are_validated() {
        assert_eq!(Question::new("example.com.", "aaaa").unwrap().record_type(), "AAAA");
        assert_eq!(
            Question::new("example.com", "BOGUS").unwrap_err(),
            "\"BOGUS\" is not a DNS record type (A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ...)"
        );
        assert!(
            Question::new(&"a".repeat(70), "A")
                .unwrap_err()
                .starts_with(&format!("\"{}\" is not a domain name", "a".repeat(70)))
        );
    }
}
