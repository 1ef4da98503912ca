//! What crosses the boundary between the sans-IO core and the drivers in `ipsla-net`.
//!
//! The state machines in this crate never open a socket or read a clock; every entry point takes
//! the monotonic `now` as a plain [`std::time::Instant`]. Two things beyond that pass between a
//! state machine and its driver, and both are defined here, once, for every driver:
//!
//! - **Measurement ports.** A machine that needs a socket (the Cisco responder on a control
//!   message, the TWAMP server on Request-TW-Session) asks a [`PortBinder`] to open a
//!   [`PortKey`] and later to close it. The driver implements the trait with real sockets; the
//!   socket must be receiving when [`PortBinder::open`] returns, because a peer may send its first
//!   probe 0.1 ms after it reads our reply.
//! - **Receive times.** Every received datagram is handed in with an [`RxTime`]: the wall-clock
//!   time and whether it is the kernel's receive stamp or a userspace reading taken after
//!   `recvmsg`. The kernel's stamp wins when the socket delivers one; the flag lets the
//!   statistics say which clock they rest on.
//!
//! Transmit times go the other way through the machines' own calls (the driver reads the wall
//! clock as late as it can, or hands back the kernel's transmit stamp), so they have no type here.
//!
//! With the `testing` feature (and in this crate's tests) `FakeBinder` stands in for the driver.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Transport of a measurement port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// UDP (Cisco udp-echo and udp-jitter, TWAMP test sessions).
    Udp,
    /// TCP (Cisco tcp-connect).
    Tcp,
}

/// A measurement port: where the driver listens on behalf of a state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PortKey {
    /// Transport.
    pub proto: Proto,
    /// Local address to bind: the one the peer asked to measure towards.
    pub addr: IpAddr,
    /// Local port (0 in a request to [`PortBinder::open`]: any free port of the range).
    pub port: u16,
}

/// Why a port could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// Something else holds the port.
    #[error("port in use")]
    InUse,
    /// The address is not one of this host's.
    #[error("address not local")]
    NotLocal,
    /// Any other failure (permissions, descriptors exhausted…).
    #[error("bind failed")]
    Other,
}

/// Opens and closes measurement sockets. `ipsla-net` implements it with real sockets.
pub trait PortBinder {
    /// Opens `key` (port 0: pick a free port in `range`) and returns the port actually bound. The
    /// socket must be ready to receive when this returns.
    fn open(&mut self, key: PortKey, range: &RangeInclusive<u16>) -> Result<u16, BindError>;
    /// Releases a port; the caller may defer the close until pending replies are sent.
    fn close(&mut self, key: PortKey);
}

/// Receive time of a datagram and which clock gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxTime {
    /// Wall-clock time since the Unix epoch.
    pub wall: Duration,
    /// True when it is the kernel's receive stamp, false for a userspace reading.
    pub kernel: bool,
}

/// Test double for [`PortBinder`], no sockets: remembers what is open, can be told that a port is
/// busy or an address is not local. Compiled for this crate's tests and with the `testing` feature
/// (the fuzz targets use it); never part of a shipped build.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct FakeBinder {
    /// Ports currently open.
    pub open: std::collections::BTreeSet<PortKey>,
    /// Ports that fail with `InUse`.
    pub busy: std::collections::BTreeSet<u16>,
    /// Addresses that fail with `NotLocal` (everything else counts as local).
    pub foreign: std::collections::BTreeSet<IpAddr>,
}

#[cfg(any(test, feature = "testing"))]
impl PortBinder for FakeBinder {
    fn open(&mut self, mut key: PortKey, range: &RangeInclusive<u16>) -> Result<u16, BindError> {
        if self.foreign.contains(&key.addr) {
            return Err(BindError::NotLocal);
        }
        if key.port == 0 {
            key.port = range
                .clone()
                .find(|p| !self.busy.contains(p) && !self.open.iter().any(|k| k.port == *p && k.proto == key.proto))
                .ok_or(BindError::InUse)?;
        }
        if self.busy.contains(&key.port) {
            return Err(BindError::InUse);
        }
        self.open.insert(key);
        Ok(key.port)
    }
    fn close(&mut self, key: PortKey) {
        self.open.remove(&key);
    }
}
