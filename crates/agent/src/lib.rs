//! `ipsla-agent`: the daemon's library. So far: [`runner`], which turns a validated operation
//! specification into one run (shared by `ipsla probe` and the agent).

pub mod runner;
