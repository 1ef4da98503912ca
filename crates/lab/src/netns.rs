//! Hosts (network namespaces) and the lab that owns them.

use crate::link::{self, Link, LinkConfig};
use crate::tun::Tun;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

const PREFIX: &str = "ipsla-lab-";

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Removes namespaces left by lab runs whose process no longer exists.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A test host: a network namespace with its loopback up.
#[derive(Debug, Clone)]
pub struct Host {
    ns: String,
}

impl Host {
    /// The namespace name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// A command that runs `program` inside this host, on the CPUs the link forwarders leave
    /// free (see [`crate::host_cpus`]).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "taskset", "-c", &crate::host_cpus()]).arg(program);
        c
    }

    /// Spawns a command (usually from [`Host::command`]) that is killed when the guard drops.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<ChildGuard> {
        Ok(ChildGuard(cmd.spawn()?))
    }

    /// Runs `f` on a thread that has entered this host's namespace (and is kept off the
    /// forwarders' CPU): sockets it creates, and threads it spawns, live in the host.
    pub fn run<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut set = nix::sched::CpuSet::new();
                for cpu in 0..std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1) {
                    let _ = set.set(cpu);
                }
                // threads spawned from here (a responder's) inherit this affinity
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("the closure panicked"))?
        })
    }
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Owns hosts and links; removes everything when dropped.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    hosts: Vec<String>,
    links: Vec<(Link, Option<JoinHandle<()>>)>,
}

impl Lab {
    /// A new, empty lab. `name` keeps concurrent labs of one process apart.
    pub fn new(name: &str) -> io::Result<Lab> {
        if !crate::available() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the lab needs root, /dev/net/tun and iproute2",
            ));
        }
        sweep_stale();
        Ok(Lab { prefix: format!("{PREFIX}{}-{name}", std::process::id()), hosts: Vec::new(), links: Vec::new() })
    }

    /// Adds a host.
    pub fn host(&mut self, name: &str) -> io::Result<Host> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(Host { ns })
    }

    /// Joins `a` and `b` with an impairment link. Link *i* of the lab uses 10.77.*i*.1 (a) and
    /// 10.77.*i*.2 (b), /24.
    pub fn link(&mut self, a: &Host, b: &Host, cfg: LinkConfig) -> io::Result<Link> {
        let i = self.links.len();
        if i > 250 {
            return Err(io::Error::other("too many links"));
        }
        let tag = format!("il{:x}{}", std::process::id() & 0xfffff, i);
        let (an, bn) = (format!("{tag}a"), format!("{tag}b"));
        let ta = Tun::create(&an)?;
        let tb = Tun::create(&bn)?;
        let (aa, ba) = (Ipv4Addr::new(10, 77, i as u8, 1), Ipv4Addr::new(10, 77, i as u8, 2));
        for (dev, host, addr) in [(&an, a, aa), (&bn, b, ba)] {
            ip(&["link", "set", dev, "netns", &host.ns])?;
            // no IPv6 link-local address: no router solicitations crossing the link unasked
            ip(&["-n", &host.ns, "link", "set", dev, "addrgenmode", "none"])?;
            ip(&["-n", &host.ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", &host.ns, "link", "set", dev, "up"])?;
        }
        let (link, t) = link::new_link(ta, tb, aa, ba, cfg);
        self.links.push((link.clone(), Some(t)));
        Ok(link)
    }

    /// Joins `hosts` on a plain LAN, for the traffic a test does not measure (HTTP APIs, a
    /// time-series database): a kernel bridge in `hub` and a veth pair from it to each host. The
    /// hub has 10.79.0.1/24 on the bridge, host *i* 10.79.0.(*i* + 2)/24 on its `lan0`; returned
    /// in that order, the hub's first. No impairment, no log, no forwarder thread; everything goes
    /// with the namespaces. One LAN per lab.
    pub fn lan(&mut self, hub: &Host, hosts: &[&Host]) -> io::Result<Vec<Ipv4Addr>> {
        if hosts.len() > 250 {
            return Err(io::Error::other("a LAN of at most 250 hosts"));
        }
        let hub_addr = Ipv4Addr::new(10, 79, 0, 1);
        ip(&["-n", &hub.ns, "link", "add", "lanbr", "type", "bridge"])?;
        ip(&["-n", &hub.ns, "link", "set", "lanbr", "addrgenmode", "none"])?;
        ip(&["-n", &hub.ns, "addr", "add", &format!("{hub_addr}/24"), "dev", "lanbr"])?;
        ip(&["-n", &hub.ns, "link", "set", "lanbr", "up"])?;
        let mut addrs = vec![hub_addr];
        for (i, h) in hosts.iter().enumerate() {
            let (port, addr) = (format!("lan{i}"), Ipv4Addr::new(10, 79, 0, i as u8 + 2));
            ip(&["-n", &hub.ns, "link", "add", &port, "type", "veth", "peer", "name", "lan0", "netns", &h.ns])?;
            ip(&["-n", &hub.ns, "link", "set", &port, "addrgenmode", "none"])?;
            ip(&["-n", &hub.ns, "link", "set", &port, "master", "lanbr", "up"])?;
            ip(&["-n", &h.ns, "link", "set", "lan0", "addrgenmode", "none"])?;
            ip(&["-n", &h.ns, "addr", "add", &format!("{addr}/24"), "dev", "lan0"])?;
            ip(&["-n", &h.ns, "link", "set", "lan0", "up"])?;
            addrs.push(addr);
        }
        Ok(addrs)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (l, t) in &mut self.links {
            l.shared.stop.store(true, Ordering::Relaxed);
            if let Some(t) = t.take() {
                let _ = t.join();
            }
        }
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
