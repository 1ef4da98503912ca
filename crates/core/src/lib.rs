//! `ipsla-core`: the sans-IO logic of IP SLA.
//!
//! Nothing here reads a clock or touches a socket: every entry point takes `now` (a monotonic
//! [`std::time::Instant`]) and, where a timestamp goes on the wire, the wall-clock time as a
//! [`std::time::Duration`] since the Unix epoch. What a driver hands in and is asked for (ports
//! through the [`io::PortBinder`] trait, receive times as [`io::RxTime`]) lives in [`io`];
//! `ipsla-net` implements the binder with real sockets.
//!
//! ```
//! use ipsla_core::io::{BindError, PortBinder, PortKey, Proto};
//! use ipsla_core::responder::{ControlResult, Responder, ResponderConfig};
//! use std::ops::RangeInclusive;
//! use std::time::{Duration, Instant};
//!
//! // What the driver does with sockets, reduced to a list of open ports.
//! #[derive(Default)]
//! struct Ports(Vec<PortKey>);
//! impl PortBinder for Ports {
//!     fn open(&mut self, key: PortKey, _range: &RangeInclusive<u16>) -> Result<u16, BindError> {
//!         self.0.push(key);
//!         Ok(key.port)
//!     }
//!     fn close(&mut self, key: PortKey) {
//!         self.0.retain(|k| *k != key);
//!     }
//! }
//!
//! let mut r = Responder::new(ResponderConfig::default());
//! let mut ports = Ports::default();
//! // A v1 udp-jitter request to 127.0.0.1:16384 for 5400 ms.
//! let mut req = vec![1, 0x6e, 0, 52, 0, 0, 0, 0, 0, 4, 0, 16, 0, 0, 0, 0, 127, 0, 0, 1, 0x40, 0, 0x15, 0x18, 0, 1, 0, 28];
//! req.resize(52, 0);
//! let mut out = [0u8; 1024];
//! let res = r.handle_control(Instant::now(), Duration::ZERO, "127.0.0.1:50000".parse().unwrap(), &req, &mut out, &mut ports);
//! assert!(matches!(res, ControlResult::Reply { len: 24, accepted: true }));
//! assert_eq!(ports.0, [PortKey { proto: Proto::Udp, addr: [127, 0, 0, 1].into(), port: 16384 }]);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod due;
pub mod error;
pub mod io;
pub mod ops;
pub mod ratelimit;
pub mod reaction;
pub mod responder;
pub mod schedule;
pub mod stamp;
pub mod stats;
pub mod track;
pub mod twamp;
pub mod voice;
