//! `ipsla-net`: sockets, clocks and kernel timestamps, and the drivers that pump the sans-IO
//! state machines of `ipsla-core`.
//!
//! This is the only crate that reads clocks or owns sockets. Receive timestamps come from the
//! kernel (`SO_TIMESTAMPING` software RX stamps delivered as `SCM_TIMESTAMPING` control messages)
//! and fall back to a userspace reading only when the kernel gives none; every stamp says which
//! it is.
//!
//! ```no_run
//! use ipsla_net::responder::{ResponderOptions, spawn_responder};
//! let running = spawn_responder(ResponderOptions::default()).unwrap();
//! println!("v1 control on {:?}", running.control_v1_addrs());
//! running.stop();
//! ```
#![warn(missing_docs)]

pub mod batch;
pub mod clock;
pub mod pacer;
pub mod path;
pub mod privilege;
pub mod probe;
mod reflect;
pub mod responder;
pub mod route;
pub mod socket;
pub mod twamp;

/// The responder's listeners, as errors name them (a caller maps each to its flag or key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// v1 control (UDP 1967).
    ControlV1,
    /// RFC 6812 v2 control (UDP 1167).
    ControlV2,
    /// A permanent port of this kind.
    Permanent(ipsla_core::responder::PermanentKind),
    /// A STAMP Session-Reflector.
    Stamp,
    /// A TWAMP-Control server.
    Twamp,
    /// A TWAMP-Light reflector.
    TwampLight,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ipsla_core::responder::PermanentKind;
        f.write_str(match self {
            Listener::ControlV1 => "v1 control port",
            Listener::ControlV2 => "v2 control port",
            Listener::Permanent(PermanentKind::UdpEcho) => "permanent udp-echo port",
            Listener::Permanent(PermanentKind::UdpJitter) => "permanent udp-jitter port",
            Listener::Permanent(PermanentKind::TcpConnect) => "permanent tcp-connect port",
            Listener::Stamp => "STAMP reflector port",
            Listener::Twamp => "TWAMP-Control port",
            Listener::TwampLight => "TWAMP-Light reflector port",
        })
    }
}

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A listening socket could not be bound.
    #[error("cannot bind the {listener} {addr}")]
    Bind {
        /// Which listener.
        listener: Listener,
        /// What we tried to bind.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The status socket could not be created.
    #[error("cannot create the status socket {}", path.display())]
    StatusSocket {
        /// Its path.
        path: std::path::PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Another running responder answers on the status socket: one socket, one instance.
    #[error("the status socket {} belongs to a running responder", path.display())]
    StatusSocketInUse {
        /// Its path.
        path: std::path::PathBuf,
    },
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
