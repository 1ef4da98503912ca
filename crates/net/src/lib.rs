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

pub mod clock;
pub mod pacer;
pub mod privilege;
pub mod probe;
mod reflect;
pub mod responder;
pub mod route;
pub mod socket;
pub mod twamp;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A listening socket could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
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
