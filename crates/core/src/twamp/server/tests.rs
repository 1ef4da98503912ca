//! The control server against a scripted client written with the wire API only, on a fake clock
//! with a seeded RNG and the fake port binder.

use super::*;
use crate::io::FakeBinder;
use crate::twamp::reflector::SessionReflector;
use ipsla_wire::twamp::TypeP;
use ipsla_wire::twamp::control::{
    AcceptSession, KeyId, ServerGreeting, ServerStart, StartAck, StartSessionsRepr, StopSessionsRepr,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const PEER: &str = "192.0.2.10:40000";
const LOCAL: &str = "192.0.2.1:862";
const SECRET: &[u8] = b"testsecret";

fn config(modes: Modes) -> ServerConfig {
    ServerConfig {
        modes,
        keys: KeyFile::single("alice", SECRET),
        pbkdf2_count: 1024,
        start_time: Duration::from_secs(1_700_000_000),
        ..ServerConfig::default()
    }
}

/// The fake binder, plus what a kernel does: a port already bound is in use.
#[derive(Debug, Default)]
struct Binder(FakeBinder);

impl PortBinder for Binder {
    fn open(&mut self, key: PortKey, range: &RangeInclusive<u16>) -> Result<u16, BindError> {
        if key.port != 0 && self.0.open.iter().any(|k| k.port == key.port) {
            return Err(BindError::InUse);
        }
        self.0.open(key, range)
    }
    fn close(&mut self, key: PortKey) {
        self.0.close(key)
    }
}

impl std::ops::Deref for Binder {
    type Target = FakeBinder;
    fn deref(&self) -> &FakeBinder {
        &self.0
    }
}

impl std::ops::DerefMut for Binder {
    fn deref_mut(&mut self) -> &mut FakeBinder {
        &mut self.0
    }
}

struct Harness {
    server: ControlServer,
    binder: Binder,
    rng: StdRng,
    t0: Instant,
    now: Instant,
    wall: Duration,
}

impl Harness {
    fn new(cfg: ServerConfig) -> Self {
        cfg.validate().unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let server = ControlServer::new(Arc::new(cfg), t0, PEER.parse().unwrap(), LOCAL.parse().unwrap(), &mut rng);
        Harness { server, binder: Binder::default(), rng, t0, now: t0, wall: Duration::from_secs(1_700_000_100) }
    }

    /// Feeds bytes in the pieces the server asks for.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ControlError> {
        while !bytes.is_empty() {
            let n = self.server.expected_len().ok_or(ControlError::Closed(CloseReason::Internal))?;
            assert!(n <= bytes.len(), "server wants {n} octets, {} left", bytes.len());
            let (piece, rest) = bytes.split_at(n);
            self.server.handle_bytes(self.now, self.wall, piece, &mut self.binder, &mut self.rng)?;
            bytes = rest;
        }
        Ok(())
    }

    fn output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.server.poll_transmit() {
            out.extend_from_slice(&b);
        }
        out
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

/// The client's half of the control connection, written against the wire API only.
struct Client {
    keys: Option<SessionKeys>,
    sealer: Option<ControlSealer>,
    opener: Option<ControlOpener>,
}

impl Client {
    /// Reads the greeting, sends a Set-Up-Response with `mode` (identity and secret for modes
    /// 2/4/8), reads the Server-Start and returns its Accept.
    fn connect(h: &mut Harness, mode: Modes, id: &str, secret: &[u8]) -> (Client, Accept) {
        let g = h.output();
        let greeting = ServerGreetingRepr::parse(&ServerGreeting::new_checked(&g[..]).unwrap()).unwrap();
        let keys = SessionKeys { aes: [0x11; 16], hmac: [0x22; 32] };
        let client_iv = [0x33u8; 16];
        let protected = mode.security_mode().is_some_and(SecurityMode::protects_control);
        let token = if protected {
            let dk = crypto::derive_key(secret, &greeting.salt, greeting.count).unwrap();
            crypto::encrypt_token(&dk, &greeting.challenge, &keys)
        } else {
            [0; 64]
        };
        let mut setup = vec![0u8; 164];
        SetUpResponseRepr { mode, key_id: KeyId::new(id.as_bytes()).unwrap(), token, client_iv }.emit(&mut setup);
        let r = h.feed(&setup);
        let mut ss = h.output();
        if mode.is_empty() {
            assert_eq!(r, Err(ControlError::Closed(CloseReason::ClientGaveUp)));
            assert!(ss.is_empty(), "no Server-Start after Mode 0");
            return (Client { keys: None, sealer: None, opener: None }, Accept::Failure);
        }
        assert_eq!(ss.len(), 48);
        let accept = ServerStart::new_checked(&ss[..]).unwrap().accept();
        if !accept.is_ok() || !protected {
            let start = ServerStartRepr::parse(&ServerStart::new_checked(&ss[..]).unwrap()).unwrap();
            if accept.is_ok() {
                assert_eq!(start.start_time, NtpTimestamp::from_unix(Duration::from_secs(1_700_000_000)));
            } else {
                assert_eq!(start.start_time, NtpTimestamp(0), "rejection: Start-Time zero, in clear");
                assert!(r.is_err());
            }
            return (Client { keys: None, sealer: None, opener: None }, accept);
        }
        let server_iv: [u8; 16] = ss[16..32].try_into().unwrap();
        let mut opener = ControlOpener::new(&keys, &server_iv);
        opener.decrypt_blocks(&mut ss[32..48]).unwrap();
        let start = ServerStartRepr::parse(&ServerStart::new_checked(&ss[..]).unwrap()).unwrap();
        assert_eq!(start.start_time, NtpTimestamp::from_unix(Duration::from_secs(1_700_000_000)));
        let sealer = ControlSealer::new(&keys, &client_iv);
        (Client { keys: Some(keys), sealer: Some(sealer), opener: Some(opener) }, accept)
    }

    fn send(&mut self, h: &mut Harness, mut msg: Vec<u8>) -> Result<(), ControlError> {
        if let Some(s) = &mut self.sealer {
            s.seal(&mut msg).unwrap();
        }
        h.feed(&msg)
    }

    /// Reads `len` octets of server output, opened in modes 2/4/8.
    fn recv(&mut self, h: &mut Harness, len: usize) -> Vec<u8> {
        let mut out = h.output();
        assert_eq!(out.len(), len, "server output");
        if let Some(o) = &mut self.opener {
            o.open(&mut out).expect("server HMAC verifies");
        }
        out
    }

    fn request(&mut self, h: &mut Harness, r: &RequestTwSessionRepr) -> AcceptSessionRepr {
        let mut m = vec![0u8; 112];
        r.emit(&mut m);
        self.send(h, m).unwrap();
        let a = self.recv(h, 48);
        AcceptSessionRepr::parse(&AcceptSession::new_checked(&a[..]).unwrap()).unwrap()
    }

    fn start(&mut self, h: &mut Harness) -> Accept {
        let mut m = vec![0u8; 32];
        StartSessionsRepr.emit(&mut m);
        self.send(h, m).unwrap();
        StartAck::new_checked(&self.recv(h, 32)[..]).unwrap().accept()
    }

    fn stop(&mut self, h: &mut Harness, n: u32) -> Result<(), ControlError> {
        let mut m = vec![0u8; 32];
        StopSessionsRepr { accept: Accept::Ok, number_of_sessions: n }.emit(&mut m);
        self.send(h, m)
    }

    fn list(&mut self, h: &mut Harness, cmd: Command, sids: &[Sid]) -> Result<(), ControlError> {
        let r = SessionListRepr { command: cmd, accept: Accept::Ok, sids: SidList::Sids(sids) };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut m);
        self.send(h, m)
    }
}

fn request() -> RequestTwSessionRepr {
    RequestTwSessionRepr {
        sender_address: "0.0.0.0".parse().unwrap(),
        receiver_address: "0.0.0.0".parse().unwrap(),
        conf_sender: 0,
        conf_receiver: 0,
        schedule_slots: 0,
        packets: 0,
        sender_port: 50000,
        receiver_port: 18800,
        sid: Sid::default(),
        padding_length: 27,
        start_time: NtpTimestamp(0),
        timeout: NtpTimestamp::from_interval(Duration::from_secs(2)),
        type_p: TypeP::from_dscp(46),
        octets_to_reflect: 0,
        padding_to_reflect: 0,
    }
}

fn accepted(events: &[ServerEvent]) -> (SocketAddr, SessionParams) {
    match events {
        [ServerEvent::SessionAccepted { local, params }] => (*local, params.clone()),
        other => panic!("expected one SessionAccepted, got {other:?}"),
    }
}

#[test]
fn greeting_offers_modes_and_features() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let g = h.output();
    assert_eq!(g.len(), 64);
    let r = ServerGreetingRepr::parse(&ServerGreeting::new_checked(&g[..]).unwrap()).unwrap();
    assert_eq!(r.modes, Modes(0x71), "open + 16 + 32 + 64");
    assert_eq!(r.count, 1024);
    assert_ne!(r.challenge, [0; 16]);
    assert_ne!(r.salt, r.challenge);
    assert_eq!(h.server.expected_len(), Some(164));
    assert_eq!(h.server.poll_timer(), Some((Timer::Setup, h.t0 + Duration::from_secs(30))));

    let all = ServerConfig { individual_session_control: false, ..config(Modes(0xf)) };
    assert_eq!(all.offered_modes(), Modes(0xf | 32 | 64), "twampd AEMO greets 0x0f; we add 6038");
}

#[test]
fn refused_connection_greets_with_modes_zero() {
    let mut rng = StdRng::seed_from_u64(1);
    let cfg = Arc::new(config(Modes::UNAUTHENTICATED));
    let mut s = ControlServer::refuse(cfg, Instant::now(), PEER.parse().unwrap(), LOCAL.parse().unwrap(), &mut rng);
    let g = s.poll_transmit().unwrap();
    assert_eq!(ServerGreeting::new_checked(&g[..]).unwrap().modes(), Modes(0));
    assert_eq!(s.expected_len(), None);
    assert!(matches!(s.poll_event(), Some(ServerEvent::Closed(CloseReason::Refused))));
    assert_eq!((s.stats().refused, s.stats().connections), (1, 0));
}

#[test]
fn open_mode_full_session() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, accept) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    assert_eq!(accept, Accept::Ok);
    assert_eq!(h.server.mode(), Modes::UNAUTHENTICATED);
    assert_eq!(h.server.expected_len(), Some(16));

    let a = c.request(&mut h, &request());
    assert_eq!(a.accept, Accept::Ok);
    assert_eq!(a.port, 18800, "the requested port, inside the range and free");
    assert_eq!(&a.sid.0[..4], &[192, 0, 2, 1], "SID starts with the receiver's IPv4 address");
    assert_eq!(&a.sid.0[4..12], &NtpTimestamp::from_unix(h.wall).0.to_be_bytes());
    let (local, p) = accepted(&h.events());
    assert_eq!(local, "192.0.2.1:18800".parse().unwrap(), "zero Receiver Address = the control connection's");
    assert_eq!(p.sender, "192.0.2.10:50000".parse().unwrap(), "zero Sender Address = the client's");
    assert_eq!(p.sid, a.sid);
    assert_eq!(
        (p.mode, p.dscp, p.timeout, p.reflect_len),
        (SecurityMode::Unauthenticated, 46, Duration::from_secs(2), 0)
    );
    assert!(p.keys.is_none());
    assert!(!p.symmetrical, "offered, but the client chose Mode 1 only");
    assert!(h.binder.open.contains(&PortKey { proto: Proto::Udp, addr: "192.0.2.1".parse().unwrap(), port: 18800 }));

    assert_eq!(h.server.poll_timer().unwrap().0, Timer::Servwait);
    assert_eq!(c.start(&mut h), Accept::Ok);
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStarted(s)] if s == &[a.sid]));
    assert_eq!(h.server.poll_timer(), None, "SERVWAIT is suspended while a session runs");

    c.stop(&mut h, 1).unwrap();
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStopped(s)] if s == &[a.sid]));
    assert!(h.output().is_empty(), "Stop-Sessions has no reply");
    assert_eq!(h.server.poll_timer().unwrap().0, Timer::Servwait);
    h.server.session_ended(h.now, a.sid, &mut h.binder);
    assert!(h.binder.open.is_empty(), "port released");
    let s = h.server.stats();
    assert_eq!(
        (
            s.connections,
            s.established_open,
            s.sessions_accepted,
            s.sessions_started,
            s.sessions_stopped,
            s.sessions_ended
        ),
        (1, 1, 1, 1, 1, 1)
    );
}

#[test]
fn symmetrical_and_reflect_octets_when_chosen() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes(1 | 32 | 64), "", b"");
    let mut r = request();
    r.octets_to_reflect = 0xabcd;
    r.padding_to_reflect = 10;
    r.padding_length = 36; // RFC 6038 §4.2: 27 + 10 needed
    let a = c.request(&mut h, &r);
    assert_eq!(a.accept, Accept::NotSupported);
    assert_eq!((a.port, a.sid), (0, Sid::default()), "rejection: port 0 and SID 0");
    assert!(h.events().is_empty());
    r.padding_length = 37;
    let a = c.request(&mut h, &r);
    assert_eq!(a.accept, Accept::Ok);
    assert_eq!(a.reflected_octets, 0xabcd, "Reflected octets copy the request's Octets to be reflected");
    let (_, p) = accepted(&h.events());
    assert_eq!((p.reflect_len, p.symmetrical), (10, true));
    assert_eq!(h.server.stats().session_rejected_unsupported, 1);
}

#[test]
fn reflect_fields_are_mbz_without_mode_32() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let mut r = request();
    r.octets_to_reflect = 0xabcd;
    r.padding_to_reflect = 10;
    let a = c.request(&mut h, &r);
    assert_eq!((a.accept, a.reflected_octets), (Accept::Ok, 0));
    assert_eq!(accepted(&h.events()).1.reflect_len, 0);
}

fn secure_session(mode: Modes) {
    let mut h = Harness::new(config(Modes(0xf)));
    let (mut c, accept) = Client::connect(&mut h, mode, "alice", SECRET);
    assert_eq!(accept, Accept::Ok, "{mode:?}");
    // two sessions: the second Accept-Session's HMAC chains from the first
    let a1 = c.request(&mut h, &request());
    let (_, p1) = accepted(&h.events());
    let a2 = c.request(&mut h, &request());
    let (_, p2) = accepted(&h.events());
    assert_eq!((a1.accept, a2.accept), (Accept::Ok, Accept::Ok));
    assert_ne!(a1.port, a2.port, "second session: another port of the range");
    assert_eq!(a2.port, 18760, "the first free port of the range (fake binder)");
    assert_ne!(a1.sid, a2.sid);
    let sec = mode.security_mode().unwrap();
    for (a, p) in [(a1, &p1), (a2, &p2)] {
        assert_eq!(p.mode, sec);
        match sec {
            SecurityMode::Authenticated | SecurityMode::Encrypted => {
                assert_eq!(p.keys, Some(TestKeys::derive(c.keys.as_ref().unwrap(), &a.sid)));
            }
            _ => assert!(p.keys.is_none(), "mixed mode: open test packets"),
        }
    }
    assert_eq!(c.start(&mut h), Accept::Ok);
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStarted(s)] if s.len() == 2));
    c.stop(&mut h, 2).unwrap();
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStopped(s)] if s.len() == 2));
    let s = h.server.stats();
    let established = [s.established_authenticated, s.established_encrypted, s.established_mixed];
    assert_eq!(established.iter().sum::<u64>(), 1);
}

#[test]
fn authenticated_mode_session() {
    secure_session(Modes::AUTHENTICATED);
}

#[test]
fn encrypted_mode_session() {
    secure_session(Modes::ENCRYPTED | Modes::INDIVIDUAL_SESSION_CONTROL);
}

#[test]
fn mixed_mode_session() {
    secure_session(Modes::MIXED);
}

#[test]
fn client_without_common_mode_sends_mode_zero() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    Client::connect(&mut h, Modes(0), "", b"");
    assert_eq!(h.server.expected_len(), None);
    assert!(matches!(&h.events()[..], [ServerEvent::Closed(CloseReason::ClientGaveUp)]));
    assert_eq!(h.server.stats().client_gave_up, 1);
}

#[test]
fn setup_rejections_have_exact_accept_values() {
    let cases: [(Modes, Modes, &str, &[u8], Accept); 6] = [
        // server open only, client asks authenticated
        (Modes::UNAUTHENTICATED, Modes::AUTHENTICATED, "alice", SECRET, Accept::NotSupported),
        // two security bits
        (Modes(0xf), Modes(3), "alice", SECRET, Accept::NotSupported),
        // a feature bit not offered (IKEv2, RFC 7717)
        (Modes(0xf), Modes(1 | 128), "", b"", Accept::NotSupported),
        // an offered feature bit with an offered security mode
        (Modes(0xf), Modes(4 | 16), "alice", SECRET, Accept::Ok),
        // wrong secret
        (Modes(0xf), Modes::AUTHENTICATED, "alice", b"wrong", Accept::Failure),
        // unknown KeyID
        (Modes(0xf), Modes::ENCRYPTED, "mallory", SECRET, Accept::Failure),
    ];
    for (offered, chosen, id, secret, want) in cases {
        let mut h = Harness::new(config(offered));
        let (_, accept) = Client::connect(&mut h, chosen, id, secret);
        assert_eq!(accept, want, "server {offered:?}, client {chosen:?} {id}");
        if want.is_ok() {
            continue;
        }
        assert_eq!(h.server.expected_len(), None);
        assert!(matches!(&h.events()[..], [ServerEvent::Closed(CloseReason::SetupRejected(a))] if *a == want));
        let s = h.server.stats().clone();
        match (want, id) {
            (Accept::NotSupported, _) => assert_eq!(s.rejected_mode, 1),
            (_, "mallory") => assert_eq!(s.rejected_unknown_key_id, 1),
            _ => assert_eq!(s.rejected_bad_token, 1),
        }
    }
}

#[test]
fn bad_hmac_closes_and_releases_sessions() {
    let mut h = Harness::new(config(Modes(0xf)));
    let (mut c, _) = Client::connect(&mut h, Modes::AUTHENTICATED, "alice", SECRET);
    assert_eq!(c.request(&mut h, &request()).accept, Accept::Ok);
    h.events();
    assert_eq!(h.binder.open.len(), 1);
    let mut m = vec![0u8; 32];
    StartSessionsRepr.emit(&mut m);
    c.sealer.as_mut().unwrap().seal(&mut m).unwrap();
    m[20] ^= 1; // flips a bit of the encrypted HMAC
    assert_eq!(h.feed(&m), Err(ControlError::Closed(CloseReason::BadHmac)));
    assert!(h.output().is_empty(), "no Start-Ack");
    assert!(matches!(&h.events()[..], [ServerEvent::Closed(CloseReason::BadHmac)]));
    assert!(h.binder.open.is_empty(), "the session's port is released");
    assert_eq!(h.server.stats().bad_hmac, 1);
}

#[test]
fn stop_with_zero_sessions_is_all_and_mismatch_closes() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    c.request(&mut h, &request());
    c.start(&mut h);
    h.events();
    c.stop(&mut h, 0).unwrap();
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStopped(s)] if s.len() == 1));
    assert_eq!(h.server.stats().stop_zero_sessions, 1);

    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    c.request(&mut h, &request());
    c.start(&mut h);
    h.events();
    assert_eq!(c.stop(&mut h, 2), Err(ControlError::Closed(CloseReason::StopMismatch { active: 1, got: 2 })));
    assert!(h.binder.open.is_empty());
    assert_eq!(h.server.stats().stop_mismatch, 1);
}

#[test]
fn request_rejections_keep_the_connection() {
    let cfg = ServerConfig { max_sessions: 1, max_padding: 1000, ..config(Modes::UNAUTHENTICATED) };
    let mut h = Harness::new(cfg);
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let mut bad = Vec::new();
    let mut r = request();
    r.conf_sender = 1;
    bad.push((r, Accept::NotSupported));
    let mut r = request();
    r.sid = Sid([1; 16]);
    bad.push((r, Accept::NotSupported));
    let mut r = request();
    r.padding_length = 1001;
    bad.push((r, Accept::NotSupported));
    let mut r = request();
    r.type_p = TypeP::from_phb_id(0x1234);
    bad.push((r, Accept::NotSupported));
    let mut r = request();
    r.receiver_address = "198.51.100.1".parse().unwrap();
    bad.push((r, Accept::Failure));
    h.binder.foreign.insert("198.51.100.1".parse().unwrap());
    for (r, want) in bad {
        let a = c.request(&mut h, &r);
        assert_eq!((a.accept, a.port), (want, 0), "{r:?}");
        assert_eq!(h.server.expected_len(), Some(16), "still open");
    }
    assert!(h.events().is_empty());
    assert_eq!(c.request(&mut h, &request()).accept, Accept::Ok);
    h.events();
    assert_eq!(c.request(&mut h, &request()).accept, Accept::PermanentResourceLimitation);
    let s = h.server.stats();
    assert_eq!(
        (s.session_rejected_unsupported, s.session_rejected_padding, s.session_rejected_bind, s.session_rejected_limit),
        (3, 1, 1, 1)
    );
}

#[test]
fn ipvn_other_than_4_or_6_is_not_supported() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let mut m = vec![0u8; 112];
    request().emit(&mut m);
    m[1] = 5;
    c.send(&mut h, m).unwrap();
    let a = c.recv(&mut h, 48);
    assert_eq!(AcceptSession::new_checked(&a[..]).unwrap().accept(), Accept::NotSupported);
}

#[test]
fn receiver_port_choice() {
    let mut h = Harness::new(ServerConfig { test_ports: 20000..=20002, ..config(Modes::UNAUTHENTICATED) });
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let mut r = request();
    r.receiver_port = 20001;
    assert_eq!(c.request(&mut h, &r).port, 20001, "inside the range: granted");
    h.binder.busy.insert(20000);
    r.receiver_port = 862;
    assert_eq!(c.request(&mut h, &r).port, 20002, "outside the range: the first free one");
    r.receiver_port = 20001;
    let a = c.request(&mut h, &r);
    assert_eq!((a.accept, a.port), (Accept::TemporaryResourceLimitation, 0), "range exhausted");
}

#[test]
fn ipv6_sid_and_addresses() {
    let mut rng = StdRng::seed_from_u64(3);
    let cfg = Arc::new(config(Modes::UNAUTHENTICATED));
    let peer: SocketAddr = "[2001:db8::10]:40000".parse().unwrap();
    let local: SocketAddr = "[2001:db8::1]:862".parse().unwrap();
    let t0 = Instant::now();
    let mut h = Harness {
        server: ControlServer::new(cfg, t0, peer, local, &mut rng),
        binder: Binder::default(),
        rng,
        t0,
        now: t0,
        wall: Duration::from_secs(1_700_000_100),
    };
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let mut r = request();
    r.sender_address = "::".parse().unwrap();
    r.receiver_address = "::".parse().unwrap();
    let a = c.request(&mut h, &r);
    // FNV-1a of 2001:db8::1
    let fnv = "2001:0db8:0000:0000:0000:0000:0000:0001"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .iter()
        .fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    assert_eq!(&a.sid.0[..4], &fnv.to_be_bytes());
    let (local_ev, p) = accepted(&h.events());
    assert_eq!(local_ev.ip(), local.ip());
    assert_eq!(p.sender, SocketAddr::new(peer.ip(), 50000));
}

#[test]
fn individual_session_control() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes(1 | 16), "", b"");
    let s1 = c.request(&mut h, &request()).sid;
    let s2 = c.request(&mut h, &request()).sid;
    h.events();
    let unknown = Sid([9; 16]);
    c.list(&mut h, Command::StartNSessions, &[s1, unknown]).unwrap();
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStarted(s)] if s == &[s1]));
    let out = h.output();
    assert_eq!(out.len(), 48 + 48, "one ack per Accept code");
    let ok_view = SessionList::new_checked(&out[..48]).unwrap();
    let ok = SessionListRepr::parse(&ok_view).unwrap();
    assert_eq!((ok.command, ok.accept), (Command::StartNAck, Accept::Ok));
    assert_eq!(ok.sids.iter().collect::<Vec<_>>(), vec![s1]);
    let bad_view = SessionList::new_checked(&out[48..]).unwrap();
    let bad = SessionListRepr::parse(&bad_view).unwrap();
    assert_eq!((bad.accept, bad.sids.iter().collect::<Vec<_>>()), (Accept::Failure, vec![unknown]));
    // Stop-Sessions counts only the started session
    c.list(&mut h, Command::StopNSessions, &[s1]).unwrap();
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStopped(s)] if s == &[s1]));
    let out = h.output();
    let ack_view = SessionList::new_checked(&out[..]).unwrap();
    let ack = SessionListRepr::parse(&ack_view).unwrap();
    assert_eq!((ack.command, ack.accept), (Command::StopNAck, Accept::Ok));
    // Start-Sessions starts the rest
    assert_eq!(c.start(&mut h), Accept::Ok);
    assert!(matches!(&h.events()[..], [ServerEvent::SessionsStarted(s)] if s == &[s2]));
    let s = h.server.stats();
    assert_eq!((s.individual_commands, s.unknown_sids, s.sessions_started), (2, 1, 2));
}

#[test]
fn individual_commands_need_mode_16() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let sid = c.request(&mut h, &request()).sid;
    h.events();
    c.list(&mut h, Command::StartNSessions, &[sid]).unwrap();
    let out = h.output();
    let ack_view = SessionList::new_checked(&out[..]).unwrap();
    let ack = SessionListRepr::parse(&ack_view).unwrap();
    assert_eq!((ack.command, ack.accept), (Command::StartNAck, Accept::NotSupported));
    assert!(h.events().is_empty());
    assert_eq!(h.server.expected_len(), Some(16));
}

#[test]
fn unknown_command_answers_accept_3_and_closes() {
    let mut h = Harness::new(config(Modes(0xf)));
    let (mut c, _) = Client::connect(&mut h, Modes::ENCRYPTED, "alice", SECRET);
    let mut m = vec![0u8; 16];
    m[0] = 6; // Experimentation
    let mut full = vec![0u8; 32];
    full[..16].copy_from_slice(&m);
    c.sealer.as_mut().unwrap().seal(&mut full).unwrap();
    let r = h.feed(&full[..16]);
    assert_eq!(r, Err(ControlError::Closed(CloseReason::UnknownCommand(6))));
    let a = c.recv(&mut h, 48);
    assert_eq!(AcceptSession::new_checked(&a[..]).unwrap().accept(), Accept::NotSupported);
    assert_eq!(h.server.stats().unknown_commands, 1);
}

#[test]
fn timers() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    h.server.handle_timeout(h.t0 + Duration::from_secs(29), &mut h.binder);
    assert!(!h.server.is_closed());
    h.server.handle_timeout(h.t0 + Duration::from_secs(30), &mut h.binder);
    assert!(matches!(&h.events()[..], [ServerEvent::Closed(CloseReason::SetupTimeout)]));
    assert_eq!(h.server.stats().setup_timeouts, 1);

    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    h.now = h.t0 + Duration::from_secs(10);
    let sid = c.request(&mut h, &request()).sid;
    let servwait = h.t0 + Duration::from_secs(910);
    assert_eq!(h.server.poll_timer(), Some((Timer::Servwait, servwait)));
    c.start(&mut h);
    assert_eq!(h.server.poll_timeout(), None);
    // the reflector ended by REFWAIT: SERVWAIT counts from there
    let end = h.t0 + Duration::from_secs(2000);
    h.server.session_ended(end, sid, &mut h.binder);
    assert_eq!(h.server.poll_timeout(), Some(end + Duration::from_secs(900)));
    h.server.handle_timeout(end + Duration::from_secs(900), &mut h.binder);
    assert!(h.server.is_closed());
    assert_eq!(h.server.stats().servwait_timeouts, 1);
}

#[test]
fn stopped_sessions_outlive_the_connection() {
    // twping closes the connection right after Stop-Sessions: the stopped session still
    // reflects for its Timeout; one that was never started ends with the connection.
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes(1 | 16), "", b"");
    let stopped = c.request(&mut h, &request()).sid;
    let idle = c.request(&mut h, &request()).sid;
    c.list(&mut h, Command::StartNSessions, &[stopped]).unwrap();
    c.stop(&mut h, 1).unwrap();
    h.output();
    h.events();
    h.server.handle_eof(&mut h.binder);
    assert!(h.server.is_closed());
    assert_eq!(h.server.session_count(), 1);
    assert_eq!(h.binder.open.len(), 1, "the stopped session's port stays open");
    h.server.session_ended(h.now, idle, &mut h.binder); // already gone: ignored
    h.server.session_ended(h.now, stopped, &mut h.binder);
    assert_eq!((h.server.session_count(), h.binder.open.len()), (0, 0));
    assert_eq!(h.server.stats().sessions_ended, 2);
}

#[test]
fn timeout_is_clamped() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    let mut r = request();
    r.timeout = NtpTimestamp(u64::MAX);
    c.request(&mut h, &r);
    assert_eq!(accepted(&h.events()).1.timeout, Duration::from_secs(60));
    assert_eq!(h.server.stats().timeout_clamped, 1);
}

#[test]
fn eof_ends_sessions_and_wrong_length_is_refused() {
    let mut h = Harness::new(config(Modes::UNAUTHENTICATED));
    assert_eq!(
        h.server.handle_bytes(h.now, h.wall, &[0; 10], &mut h.binder, &mut h.rng),
        Err(ControlError::WrongLength { expected: Some(164), got: 10 })
    );
    let (mut c, _) = Client::connect(&mut h, Modes::UNAUTHENTICATED, "", b"");
    c.request(&mut h, &request());
    h.server.handle_eof(&mut h.binder);
    assert!(h.binder.open.is_empty());
    assert!(matches!(h.events().last(), Some(ServerEvent::Closed(CloseReason::ClientClosed))));
    assert_eq!(h.server.stats().client_closed, 1);
}

#[test]
fn accepted_session_reflects_with_the_negotiated_keys() {
    // The SessionParams of an encrypted session drive a reflector whose replies the client's
    // own key derivation opens.
    let mut h = Harness::new(config(Modes(0xf)));
    let (mut c, _) = Client::connect(&mut h, Modes::ENCRYPTED, "alice", SECRET);
    let a = c.request(&mut h, &request());
    let (_, p) = accepted(&h.events());
    let keys = TestKeys::derive(c.keys.as_ref().unwrap(), &a.sid);
    let tc = crypto::TestCrypto::new(SecurityMode::Encrypted, &keys).unwrap();
    let mut refl = SessionReflector::new(h.now, p);
    refl.start(h.now);
    let mut pkt = vec![0u8; 112];
    ipsla_wire::twamp::test::SenderRepr {
        layout: ipsla_wire::twamp::test::TestLayout::Authenticated,
        sequence: 5,
        timestamp: NtpTimestamp(0x1111),
        error_estimate: ipsla_wire::time::ErrorEstimate(1),
        padding_len: 64,
    }
    .emit(&mut pkt);
    tc.seal_sender(&mut pkt).unwrap();
    let info = crate::twamp::reflector::Received {
        rx: crate::io::RxTime { wall: Duration::from_secs(1_700_000_200), kernel: true },
        src: "192.0.2.10:50000".parse().unwrap(),
        ttl: Some(60),
        error_estimate: ipsla_wire::time::ErrorEstimate(1),
    };
    let mut out = vec![0u8; 2048];
    let rep = refl.handle(h.now, &info, &pkt, &mut out).unwrap();
    refl.transmit(&rep, &mut out, Duration::from_secs(1_700_000_201));
    let reply = &mut out[..rep.len];
    assert_eq!(reply.len(), 112);
    tc.open_reflector(reply).unwrap();
    let rp = ipsla_wire::twamp::test::ReflectorPacket::new_checked(
        &reply[..],
        ipsla_wire::twamp::test::TestLayout::Authenticated,
    )
    .unwrap();
    assert_eq!((rp.sequence(), rp.sender_sequence(), rp.sender_ttl()), (0, 5, Some(60)));
}
