//! The impairment link: a forwarder thread between two TUN devices and its ground-truth log.

use crate::packet::{FiveTuple, parse_ip};
use crate::tun::Tun;
use crate::wall_now;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Pareto};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Direction on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From host A to host B.
    AtoB,
    /// From host B to host A.
    BtoA,
}

/// Shape of the delay distribution.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum DelayDist {
    /// Always `base`.
    #[default]
    Constant,
    /// Uniform in `base ± jitter`.
    Uniform,
    /// Normal with mean `base` and standard deviation `jitter`, cut at 0.
    Normal,
    /// `base` plus a Pareto tail (shape 2.5) with scale `jitter`: mostly small, sometimes large.
    Pareto,
}

/// One-way delay of a direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Delay {
    /// Base delay.
    pub base: Duration,
    /// Spread, whose meaning depends on `dist`.
    pub jitter: Duration,
    /// Distribution.
    pub dist: DelayDist,
}

/// Loss model of a direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Loss {
    /// Nothing lost.
    #[default]
    None,
    /// Each packet lost with probability p.
    Bernoulli(f64),
    /// Two-state Gilbert–Elliott: good→bad with `p`, bad→good with `r`, loss probability
    /// `loss_good` / `loss_bad` in each state (bursts).
    GilbertElliott {
        /// P(good → bad) per packet.
        p: f64,
        /// P(bad → good) per packet.
        r: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

/// What a direction does to its packets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Impairment {
    /// Delay.
    pub delay: Delay,
    /// Loss.
    pub loss: Loss,
    /// Probability that a packet is held `reorder_extra` longer (so that later ones overtake it).
    pub reorder: f64,
    /// Extra hold of a reordered packet.
    pub reorder_extra: Duration,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Serialisation rate in bits per second (None = unlimited).
    pub rate_bps: Option<u64>,
    /// Drop exactly these packets of the direction (0-based arrival index): scripted loss.
    pub drop_indices: Vec<u64>,
    /// Duplicate exactly these packets (0-based arrival index).
    pub duplicate_indices: Vec<u64>,
}

impl Impairment {
    /// A constant delay and nothing else.
    pub fn delay(d: Duration) -> Self {
        Impairment { delay: Delay { base: d, ..Delay::default() }, ..Impairment::default() }
    }
}

/// Both directions of a link and its seed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkConfig {
    /// A → B.
    pub a_to_b: Impairment,
    /// B → A.
    pub b_to_a: Impairment,
    /// Seed of the random decisions.
    pub seed: u64,
}

impl LinkConfig {
    /// The same impairment both ways.
    pub fn symmetric(i: Impairment, seed: u64) -> Self {
        LinkConfig { a_to_b: i.clone(), b_to_a: i, seed }
    }
}

/// Why a packet was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The loss model (or a scripted index) dropped it.
    Loss,
    /// The link was down.
    LinkDown,
    /// Writing it into the far TUN device failed.
    WriteFailed,
}

/// What happened to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still held by the link.
    Queued,
    /// Written into the far host at `egress`.
    Delivered {
        /// Wall-clock time of the write.
        egress: Duration,
    },
    /// Never delivered.
    Dropped(DropReason),
}

/// The ground truth of one packet (one copy, for duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Index in the log.
    pub id: u64,
    /// Direction.
    pub dir: Dir,
    /// Arrival index within its direction (0-based; a duplicate shares its original's).
    pub index: u64,
    /// Wall-clock time the forwarder read it.
    pub ingress: Duration,
    /// Its fate.
    pub fate: Fate,
    /// Addresses, ports, protocol (None when not IPv4/IPv6).
    pub tuple: Option<FiveTuple>,
    /// Packet length.
    pub len: usize,
    /// The first 64 bytes after the L4 header (IP SLA / ICMP payload), for matching.
    pub head: Vec<u8>,
    /// For a duplicate copy: the record of the original.
    pub duplicate_of: Option<u64>,
    /// When queued: the time the impairment scheduled its delivery (ingress + sampled delay,
    /// after the rate limit). The forwarder writes it at that time or later, never earlier: what
    /// the impairment asked for, independent of how busy the machine is.
    pub release: Option<Duration>,
}

impl Record {
    /// Egress − ingress, when delivered.
    pub fn held(&self) -> Option<Duration> {
        match self.fate {
            Fate::Delivered { egress } => egress.checked_sub(self.ingress),
            _ => None,
        }
    }
    /// The delay the impairment scheduled (release − ingress), when queued.
    pub fn planned(&self) -> Option<Duration> {
        self.release.and_then(|r| r.checked_sub(self.ingress))
    }
    /// How late the forwarder wrote it (egress − release), when delivered: never negative; small
    /// on a quiet machine, larger under load.
    pub fn late(&self) -> Option<Duration> {
        match self.fate {
            Fate::Delivered { egress } => egress.checked_sub(self.release?),
            _ => None,
        }
    }
    /// True when delivered.
    pub fn delivered(&self) -> bool {
        matches!(self.fate, Fate::Delivered { .. })
    }
}

#[derive(Debug)]
struct State {
    up: bool,
    imp: [Impairment; 2],
}

#[derive(Debug)]
pub(crate) struct Shared {
    log: Mutex<Vec<Record>>,
    state: Mutex<State>,
    pub(crate) stop: AtomicBool,
}

/// A link between two hosts. Cloning gives another handle to the same link.
#[derive(Debug, Clone)]
pub struct Link {
    pub(crate) shared: Arc<Shared>,
    a_addr: Ipv4Addr,
    b_addr: Ipv4Addr,
    /// Interface name at A.
    pub a_if: String,
    /// Interface name at B.
    pub b_if: String,
}

impl Link {
    /// Host A's address on this link.
    pub fn a_addr(&self) -> Ipv4Addr {
        self.a_addr
    }
    /// Host B's address on this link.
    pub fn b_addr(&self) -> Ipv4Addr {
        self.b_addr
    }
    /// A copy of the log so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
    /// Empties the log (arrival indices keep counting).
    pub fn clear_log(&self) {
        if let Ok(mut l) = self.shared.log.lock() {
            l.clear();
        }
    }
    /// Takes the link down (every packet dropped) or brings it up, at once.
    pub fn set_up(&self, up: bool) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.up = up;
        }
    }
    /// Replaces a direction's impairment, at once.
    pub fn set_impairment(&self, dir: Dir, i: Impairment) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.imp[dir as usize] = i;
        }
    }
    /// Waits until nothing is queued on the link (bounded by `max`).
    pub fn drain(&self, max: Duration) {
        let end = std::time::Instant::now() + max;
        while std::time::Instant::now() < end {
            let queued = self.shared.log.lock().map(|l| l.iter().any(|r| r.fate == Fate::Queued)).unwrap_or(false);
            if !queued {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

struct Queued {
    release: Duration,
    order: u64,
    dir: Dir,
    pkt: Vec<u8>,
    record: u64,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.release, self.order) == (o.release, o.order)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.release, self.order).cmp(&(o.release, o.order))
    }
}

struct DirState {
    rng: StdRng,
    bad: bool,
    next_free: Duration,
    index: u64,
}

pub(crate) fn new_link(
    a: Tun,
    b: Tun,
    a_addr: Ipv4Addr,
    b_addr: Ipv4Addr,
    cfg: LinkConfig,
) -> (Link, std::thread::JoinHandle<()>) {
    let shared = Arc::new(Shared {
        log: Mutex::new(Vec::new()),
        state: Mutex::new(State { up: true, imp: [cfg.a_to_b.clone(), cfg.b_to_a.clone()] }),
        stop: AtomicBool::new(false),
    });
    let link = Link { shared: shared.clone(), a_addr, b_addr, a_if: a.name.clone(), b_if: b.name.clone() };
    let seed = cfg.seed;
    let t = std::thread::Builder::new()
        .name(format!("lab-{}", a.name))
        .spawn(move || forward(shared, a, b, seed))
        .expect("spawn forwarder");
    (link, t)
}

fn sample_delay(d: &Delay, rng: &mut StdRng) -> Duration {
    let base = d.base.as_secs_f64();
    let j = d.jitter.as_secs_f64();
    let s = match d.dist {
        DelayDist::Constant => base,
        DelayDist::Uniform => base + rng.random_range(-j..=j),
        DelayDist::Normal => Normal::new(base, j).map(|n| n.sample(rng)).unwrap_or(base),
        DelayDist::Pareto => base + Pareto::new(j.max(1e-9), 2.5).map(|p| p.sample(rng) - j).unwrap_or(0.0),
    };
    Duration::from_secs_f64(s.max(0.0))
}

fn lost(l: &Loss, st: &mut DirState) -> bool {
    match *l {
        Loss::None => false,
        Loss::Bernoulli(p) => st.rng.random_bool(p.clamp(0.0, 1.0)),
        Loss::GilbertElliott { p, r, loss_good, loss_bad } => {
            let flip = if st.bad { r } else { p };
            if st.rng.random_bool(flip.clamp(0.0, 1.0)) {
                st.bad = !st.bad;
            }
            st.rng.random_bool((if st.bad { loss_bad } else { loss_good }).clamp(0.0, 1.0))
        }
    }
}

/// Pins the forwarder to the last CPU so that the hosts' processes, kept off it, are not
/// preempted by its busy-polling (which would delay their userspace timestamps).
fn pin_to_last_cpu() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n > 1 {
        let mut set = nix::sched::CpuSet::new();
        if set.set(n - 1).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    }
}

/// CPUs other than the forwarders' (for the processes under test), as a `taskset` list.
pub fn host_cpus() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n > 1 { format!("0-{}", n - 2) } else { "0".into() }
}

fn forward(shared: Arc<Shared>, mut a: Tun, mut b: Tun, seed: u64) {
    pin_to_last_cpu();
    let mut dirs = [0u64, 1].map(|d| DirState {
        rng: StdRng::seed_from_u64(seed ^ (d.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
        bad: false,
        next_free: Duration::ZERO,
        index: 0,
    });
    let mut heap: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; 65_536];
    let mut next_id = 0u64;
    let mut idle_since = wall_now();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for dir in [Dir::AtoB, Dir::BtoA] {
            // up to 64 packets per pass so that one direction cannot starve the other
            for _ in 0..64 {
                let tun = if dir == Dir::AtoB { &mut a } else { &mut b };
                let n = match tun.recv(&mut buf) {
                    Ok(n) => n,
                    Err(_) => break,
                };
                busy = true;
                let ingress = wall_now();
                let pkt = buf[..n].to_vec();
                let (up, imp) = match shared.state.lock() {
                    Ok(s) => (s.up, s.imp[dir as usize].clone()),
                    Err(_) => return,
                };
                let st = &mut dirs[dir as usize];
                let index = st.index;
                st.index += 1;
                let tuple = parse_ip(&pkt);
                let head: Vec<u8> =
                    tuple.map(|t| pkt[t.payload_at..].iter().take(64).copied().collect()).unwrap_or_default();
                // Scripted fates win over random ones: a scripted duplicate is never lost.
                let scripted_drop = imp.drop_indices.contains(&index);
                let scripted_dup = imp.duplicate_indices.contains(&index);
                let random_loss = lost(&imp.loss, st);
                let fate = if !up {
                    Fate::Dropped(DropReason::LinkDown)
                } else if scripted_drop || (random_loss && !scripted_dup) {
                    Fate::Dropped(DropReason::Loss)
                } else {
                    Fate::Queued
                };
                let mut log = match shared.log.lock() {
                    Ok(l) => l,
                    Err(_) => return,
                };
                let id = next_id;
                next_id += 1;
                log.push(Record {
                    id,
                    dir,
                    index,
                    ingress,
                    fate,
                    tuple,
                    len: n,
                    head: head.clone(),
                    duplicate_of: None,
                    release: None,
                });
                if fate != Fate::Queued {
                    continue;
                }
                let mut delay = sample_delay(&imp.delay, &mut st.rng);
                if imp.reorder > 0.0 && st.rng.random_bool(imp.reorder.clamp(0.0, 1.0)) {
                    delay += imp.reorder_extra;
                }
                let mut release = ingress + delay;
                if let Some(rate) = imp.rate_bps.filter(|r| *r > 0) {
                    release = release.max(st.next_free);
                    st.next_free = release + Duration::from_nanos(n as u64 * 8 * 1_000_000_000 / rate);
                }
                if let Some(r) = log.last_mut() {
                    r.release = Some(release);
                }
                let dup = scripted_dup || (imp.duplicate > 0.0 && st.rng.random_bool(imp.duplicate.clamp(0.0, 1.0)));
                order += 1;
                heap.push(Reverse(Queued { release, order, dir, pkt: pkt.clone(), record: id }));
                if dup {
                    let did = next_id;
                    next_id += 1;
                    log.push(Record {
                        id: did,
                        dir,
                        index,
                        ingress,
                        fate: Fate::Queued,
                        tuple,
                        len: n,
                        head,
                        duplicate_of: Some(id),
                        release: Some(release + Duration::from_micros(1)),
                    });
                    order += 1;
                    heap.push(Reverse(Queued {
                        release: release + Duration::from_micros(1),
                        order,
                        dir,
                        pkt,
                        record: did,
                    }));
                }
            }
        }
        let now = wall_now();
        while heap.peek().is_some_and(|Reverse(q)| q.release <= now) {
            let Some(Reverse(q)) = heap.pop() else { break };
            let tun = if q.dir == Dir::AtoB { &mut b } else { &mut a };
            let egress = wall_now();
            let fate = match tun.send(&q.pkt) {
                Ok(_) => Fate::Delivered { egress },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Fate::Dropped(DropReason::WriteFailed),
                Err(_) => Fate::Dropped(DropReason::WriteFailed),
            };
            if let Ok(mut log) = shared.log.lock()
                && let Some(r) = log.iter_mut().rev().find(|r| r.id == q.record)
            {
                r.fate = fate;
            }
            busy = true;
        }
        if busy {
            idle_since = now;
        } else if heap.is_empty() && now.saturating_sub(idle_since) > Duration::from_secs(1) {
            // Idle for a second with nothing queued: give the core away. The ingress stamp of the
            // next packet may then be late by this sleep plus a wake-up; a measurement keeps the
            // link busy more often than once a second, so it never sees this.
            std::thread::sleep(Duration::from_micros(200));
        } else {
            std::hint::spin_loop();
        }
    }
}
