//! Least privilege: run with only the capabilities the configuration needs, as an unprivileged
//! user when asked.
//!
//! Linux keeps capabilities per thread, so the order matters:
//! 1. The listeners are bound first, as the process was started (ports below 1024 need
//!    `CAP_NET_BIND_SERVICE`), while it has a single thread (`ipsla_net::responder::bind_responder`).
//! 2. [`enter`], still single-threaded: shrinks the bounding set to what will ever be needed,
//!    switches to the user (keeping those capabilities across `setuid`), leaves exactly that set
//!    permitted and effective, clears the inheritable and ambient sets and sets
//!    no-new-privileges. Every thread created afterwards inherits no more than this.
//! 3. Where a capability is needed only while some late binding is done ([`Plan::bind`]),
//!    [`after_bind`] reduces the calling thread to the run-time set afterwards, and long-lived
//!    threads call [`restrict_current_thread`] when they start.
//!
//! What needs what: `CAP_NET_BIND_SERVICE` for ports below 1024 (TWAMP/STAMP 862); `CAP_NET_RAW`
//! for the raw ICMP fallback and binding to a VRF device; `CAP_NET_ADMIN` for route failover.
//! Nothing else.

use caps::{CapSet, Capability, CapsHashSet};
use std::sync::OnceLock;

/// A capability the process may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// `CAP_NET_BIND_SERVICE`: bind ports below 1024.
    BindService,
    /// `CAP_NET_RAW`: raw ICMP sockets, `SO_BINDTODEVICE`.
    Raw,
    /// `CAP_NET_ADMIN`: routes (failover).
    Admin,
}

impl Privilege {
    fn capability(self) -> Capability {
        match self {
            Privilege::BindService => Capability::CAP_NET_BIND_SERVICE,
            Privilege::Raw => Capability::CAP_NET_RAW,
            Privilege::Admin => Capability::CAP_NET_ADMIN,
        }
    }

    /// The kernel's name of the capability.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::BindService => "CAP_NET_BIND_SERVICE",
            Privilege::Raw => "CAP_NET_RAW",
            Privilege::Admin => "CAP_NET_ADMIN",
        }
    }
}

/// What to keep, and as whom to run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Switch to this user (name or numeric id) and its primary group; needs root.
    pub user: Option<String>,
    /// Needed only while binding the listeners.
    pub bind: Vec<Privilege>,
    /// Needed for the whole run.
    pub run: Vec<Privilege>,
}

/// What [`enter`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The user and group now in effect.
    pub uid: u32,
    /// Group id now in effect.
    pub gid: u32,
    /// Capabilities held until [`after_bind`].
    pub start: Vec<&'static str>,
    /// Capabilities held for the run.
    pub run: Vec<&'static str>,
    /// Whether the bounding set could be narrowed (needs `CAP_SETPCAP`).
    pub bounding_narrowed: bool,
}

/// Why privileges could not be dropped as asked.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user does not exist.
    #[error("user \"{0}\" does not exist")]
    NoSuchUser(String),
    /// Switching user needs root.
    #[error("switching to user \"{0}\" needs root")]
    NotRoot(String),
    /// Capabilities are per thread: this must run before any other thread exists.
    #[error("privileges must be dropped before any thread is started ({0} threads run)")]
    Threads(usize),
    /// `capset` was refused although it only lowers capabilities: a seccomp filter forbids it.
    #[error(
        "{what}: the kernel refused capset under this process's seccomp filter; with systemd, allow it with \
         `SystemCallFilter=capset` after `SystemCallFilter=~@privileged` (as dist/ipsla-agent.service does)"
    )]
    CapsetFiltered {
        /// What was being done.
        what: &'static str,
    },
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn sys<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> PrivilegeError {
    move |e| PrivilegeError::Sys { what, source: std::io::Error::other(e.to_string()) }
}

/// For the capability sets: an EPERM from `capset` under a seccomp filter is the filter's doing
/// (lowering one's own capabilities needs no privilege), and is named as such.
fn capset<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> PrivilegeError {
    move |e| {
        if e.to_string().contains("Operation not permitted") && seccomp_filtered() {
            PrivilegeError::CapsetFiltered { what }
        } else {
            sys(what)(e)
        }
    }
}

/// Whether a seccomp filter applies to this process (`Seccomp: 2` in /proc/self/status).
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.split_once(':').is_some_and(|(k, v)| k == "Seccomp" && v.trim() == "2")))
        .unwrap_or(false)
}

static RUN_SET: OnceLock<CapsHashSet> = OnceLock::new();

fn set_of(p: &[Privilege]) -> CapsHashSet {
    p.iter().map(|p| p.capability()).collect()
}

fn names(p: &[Privilege]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = p.iter().map(|p| p.name()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1)
}

fn resolve(user: &str) -> Result<nix::unistd::User, PrivilegeError> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    found.map_err(sys("looking up the user"))?.ok_or_else(|| PrivilegeError::NoSuchUser(user.to_string()))
}

/// Step 1: drop to `plan` (see the module documentation). Call before any thread is spawned.
pub fn enter(plan: &Plan) -> Result<Report, PrivilegeError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let user = plan.user.as_deref().map(resolve).transpose()?;
    let keep: CapsHashSet = set_of(&plan.bind).union(&set_of(&plan.run)).copied().collect();
    let root = nix::unistd::geteuid().is_root();
    if let (Some(_), false) = (&user, root) {
        return Err(PrivilegeError::NotRoot(plan.user.clone().unwrap_or_default()));
    }
    // The bounding set limits what any later exec or thread could regain.
    let mut bounding_narrowed = true;
    for c in caps::all() {
        if !keep.contains(&c)
            && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false)
            && caps::drop(None, CapSet::Bounding, c).is_err()
        {
            bounding_narrowed = false;
        }
    }
    if let Some(u) = &user {
        nix::sys::prctl::set_keepcaps(true).map_err(sys("keeping capabilities across setuid"))?;
        nix::unistd::setgroups(&[u.gid]).map_err(sys("setgroups"))?;
        nix::unistd::setgid(u.gid).map_err(sys("setgid"))?;
        nix::unistd::setuid(u.uid).map_err(sys("setuid"))?;
        nix::sys::prctl::set_keepcaps(false).map_err(sys("clearing keep-capabilities"))?;
    }
    let held = caps::read(None, CapSet::Permitted).map_err(sys("reading capabilities"))?;
    let keep: CapsHashSet = keep.intersection(&held).copied().collect();
    let _ = caps::clear(None, CapSet::Ambient);
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(capset("clearing inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(capset("setting effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(capset("setting permitted capabilities"))?;
    nix::sys::prctl::set_no_new_privs().map_err(sys("setting no-new-privileges"))?;
    let run: Vec<Privilege> = plan.run.iter().copied().filter(|p| keep.contains(&p.capability())).collect();
    let start: Vec<Privilege> =
        plan.bind.iter().chain(&plan.run).copied().filter(|p| keep.contains(&p.capability())).collect();
    let _ = RUN_SET.set(set_of(&run));
    Ok(Report {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        start: names(&start),
        run: names(&run),
        bounding_narrowed,
    })
}

/// Step 3 for the thread that bound the listeners: keep only the run-time set.
pub fn after_bind() -> Result<(), PrivilegeError> {
    restrict(RUN_SET.get())
}

/// Step 3 for a thread starting: keep only the run-time set (nothing happens when [`enter`] was
/// not called). Long-lived threads call it first thing.
pub fn restrict_current_thread() {
    if let Err(e) = restrict(RUN_SET.get()) {
        tracing::warn!(error = %ipsla_core::error::Chain(&e), "could not drop this thread's capabilities");
    }
}

fn restrict(run: Option<&CapsHashSet>) -> Result<(), PrivilegeError> {
    let Some(run) = run else { return Ok(()) };
    let held = caps::read(None, CapSet::Permitted).map_err(sys("reading capabilities"))?;
    let keep: CapsHashSet = run.intersection(&held).copied().collect();
    caps::set(None, CapSet::Effective, &keep).map_err(capset("setting effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(capset("setting permitted capabilities"))?;
    Ok(())
}
