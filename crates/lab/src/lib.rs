//! `ipsla-lab`: test hosts in network namespaces joined by an impairment link built on TUN
//! devices, with the fate of every packet logged as ground truth.
//!
//! `tc netem` does not exist on the kernel this project runs on, so the link is a userspace
//! forwarder: each end of a [`Link`] is a TUN device moved into a host's namespace, and a thread of
//! this process reads what one host sends, applies the direction's [`Impairment`] (delay with
//! jitter from a chosen distribution, Bernoulli or Gilbert–Elliott loss, reordering, duplication,
//! rate limit, link down), and writes the packet into the other host's TUN device at its release
//! time. Every packet gets a [`Record`]: direction, 5-tuple, protocol, the first bytes of its
//! payload, the wall-clock time the forwarder read it and the time it wrote it (or why it was
//! dropped). Wall clock = CLOCK_REALTIME, the clock of the kernel's software timestamps.
//!
//! The forwarder busy-polls its TUN devices while the link exists: a blocking wait would add the
//! VM's ~25 µs cross-core wake-up to every ingress stamp. Randomness is seeded per link and
//! direction, so a run is repeatable for the same packet sequence.
//!
//! Needs root (namespaces, TUN). Everything is removed when the [`Lab`] is dropped, also when a
//! test panics; namespaces left by a killed run are swept by the next [`Lab::new`].
//!
//! ```no_run
//! use ipsla_lab::{Impairment, Lab, LinkConfig};
//! use std::time::Duration;
//! let mut lab = Lab::new("doc").unwrap();
//! let a = lab.host("a").unwrap();
//! let b = lab.host("b").unwrap();
//! let link = lab.link(&a, &b, LinkConfig::symmetric(Impairment::delay(Duration::from_millis(5)), 1)).unwrap();
//! let dst = std::net::SocketAddr::from((link.b_addr(), 9));
//! let rx = b.run(move || std::net::UdpSocket::bind(dst).unwrap()).unwrap();
//! a.run(move || std::net::UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"hi", dst).unwrap()).unwrap();
//! let mut buf = [0u8; 8];
//! assert_eq!(rx.recv(&mut buf).unwrap(), 2);
//! assert!(link.records()[0].held().unwrap() >= Duration::from_millis(5));
//! ```
// One ioctl (TUNSETIFF in tun.rs) needs unsafe; deny keeps any other from slipping in unseen.
#![deny(unsafe_code)]

mod link;
mod netns;
mod packet;
mod truth;
mod tun;

pub use link::{Delay, DelayDist, Dir, DropReason, Fate, Impairment, Link, LinkConfig, Loss, Record, host_cpus};
pub use netns::{ChildGuard, Host, Lab};
pub use packet::{FiveTuple, parse_ip};
pub use truth::{Format, Truth, egress, loss_scenario, seq_of, truth};

/// Wall-clock time since the Unix epoch (CLOCK_REALTIME).
pub fn wall_now() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// True when the process can build a lab (root, /dev/net/tun, `ip`).
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && std::path::Path::new("/dev/net/tun").exists()
        && std::process::Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}
