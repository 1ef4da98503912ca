//! TWAMP drivers: the control server with its test sessions on the responder thread
//! ([`server`]), and the control client that runs one measurement ([`client`]).

pub mod client;
pub mod server;
