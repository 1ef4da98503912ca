//! `ipsla-core`: the sans-IO logic of IP SLA.
//!
//! Nothing here reads a clock or touches a socket: every entry point takes `now` (a monotonic
//! [`std::time::Instant`]) and, where a timestamp goes on the wire, the wall-clock time as a
//! [`std::time::Duration`] since the Unix epoch. Sockets are reached only through the
//! [`responder::PortBinder`] trait, which `ipsla-net` implements with real sockets and tests with
//! a fake.
//!
//! ```
//! use ipsla_core::responder::{Responder, ResponderConfig, ControlResult, FakeBinder};
//! use std::time::{Duration, Instant};
//! let mut r = Responder::new(ResponderConfig::default());
//! let mut binder = FakeBinder::default();
//! // A v1 udp-jitter request to 127.0.0.1:16384 for 5400 ms.
//! let mut req = vec![1, 0x6e, 0, 52, 0, 0, 0, 0, 0, 4, 0, 16, 0, 0, 0, 0, 127, 0, 0, 1, 0x40, 0, 0x15, 0x18, 0, 1, 0, 28];
//! req.resize(52, 0);
//! let mut out = [0u8; 1024];
//! let res = r.handle_control(Instant::now(), Duration::ZERO, "127.0.0.1:50000".parse().unwrap(), &req, &mut out, &mut binder);
//! assert!(matches!(res, ControlResult::Reply { len: 24, accepted: true }));
//! ```
#![forbid(unsafe_code)]

pub mod due;
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
