//! `ipsla agent`: the daemon. Without `--config` it runs the embedded default (a responder on
//! loopback and one operation of each kind against it).

use anyhow::{Context, Result};
use clap::Args;
use ipsla_agent::daemon::{Agent, AgentConfig, AgentError, AgentFile, DEFAULT_CONFIG};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Configuration file (TOML: [agent], [responder], [[operation]]); default: the embedded one.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP listen address, overriding agent.http.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<String>,
    /// SQLite file, overriding agent.store.
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Mesh file (TOML: [[site]], [[test]]), overriding mesh.file: run its tests from --site to
    /// every other site; re-read on reload (docs/mesh.md).
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
    /// This agent's site in the mesh file, overriding mesh.site.
    #[arg(long, value_name = "NAME")]
    site: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default: bool,
    /// Run as this user (name or id) once the store, the responder and the HTTP listener are
    /// open; only the capabilities the configuration needs are kept (CAP_NET_RAW for ICMP
    /// operations and VRFs, CAP_NET_ADMIN for routes, CAP_NET_BIND_SERVICE for ports below 1024
    /// opened at run time). Needs root. Without it, every capability not needed is dropped.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
}

/// The command-line overrides of the configuration file.
#[derive(Debug, Clone, Default)]
struct Overrides {
    http: Option<String>,
    store: Option<PathBuf>,
    mesh: Option<PathBuf>,
    site: Option<String>,
}

/// Reads, overrides and validates the configuration (at start and on every reload).
fn load(config: Option<&PathBuf>, over: &Overrides) -> Result<(AgentConfig, String)> {
    let (http, store) = (over.http.as_ref(), over.store.as_ref());
    let (text, source) = match config {
        Some(p) => (
            ipsla_agent::config::read_text("--config", p, ipsla_agent::config::MAX_CONFIG_LEN)?,
            p.display().to_string(),
        ),
        None => (DEFAULT_CONFIG.to_string(), "the embedded default".to_string()),
    };
    let mut file = AgentFile::parse(&text).with_context(|| format!("in {source}"))?;
    if let Some(h) = http {
        file.agent.http = Some(h.clone());
    }
    if let Some(s) = store {
        file.agent.store = Some(s.clone());
    }
    if over.mesh.is_some() || over.site.is_some() {
        let m = file.mesh.get_or_insert_with(Default::default);
        if let Some(f) = &over.mesh {
            m.file = Some(f.clone());
        }
        if let Some(s) = &over.site {
            m.site = Some(s.clone());
        }
    }
    let cfg = file
        .validate()
        .map_err(|e| {
            // a mesh key set by its flag is named by the flag
            let flag = [("mesh.file:", "--mesh:", over.mesh.is_some()), ("mesh.site:", "--site:", over.site.is_some())]
                .into_iter()
                .find_map(|(key, flag, set)| e.0.strip_prefix(key).filter(|_| set).map(|rest| format!("{flag}{rest}")));
            anyhow::anyhow!(flag.unwrap_or(e.0))
        })
        .with_context(|| format!("in {source}"))?;
    Ok((cfg, source))
}

pub fn main(args: AgentArgs) -> Result<()> {
    if args.print_default {
        crate::out::print(DEFAULT_CONFIG)?;
        return Ok(());
    }
    let over = Overrides {
        http: args.http.clone(),
        store: args.store.clone(),
        mesh: args.mesh.clone(),
        site: args.site.clone(),
    };
    let (cfg, source) = load(args.config.as_ref(), &over)?;
    if args.check {
        crate::out::println(format_args!(
            "{source}: {} operations, responder {}, {} alert sinks",
            cfg.operations.len(),
            if cfg.responder.is_some() { "on" } else { "off" },
            cfg.alerts.len()
        ))?;
        return Ok(());
    }
    // what the log lines need, so that the configuration is not kept twice (the agent has one)
    let (store_path, operations, responder) = (cfg.store.clone(), cfg.operations.len(), cfg.responder.is_some());
    let source_name = &source;
    // the library names the key; the flag, when it overrode the key, is named here
    let (agent, dropped) = Agent::start_unprivileged(cfg, args.user.clone())
        .map_err(|e| match e {
            AgentError::Http { addr, source } if args.http.is_some() => {
                anyhow::Error::new(source).context(format!("cannot serve HTTP on {addr} (--http)"))
            }
            AgentError::Http { addr, source } => {
                anyhow::Error::new(source).context(format!("cannot serve HTTP on {addr} (agent.http in {source_name})"))
            }
            AgentError::Store { path, source } if args.store.is_some() => {
                anyhow::Error::new(source).context(format!("opening the store {} (--store)", path.display()))
            }
            AgentError::Store { path, source } => anyhow::Error::new(source)
                .context(format!("opening the store {} (agent.store in {source_name})", path.display())),
            e => anyhow::Error::new(e),
        })
        .context("starting the agent")?;
    tracing::info!(uid = dropped.uid, run = ?dropped.run, bounding_narrowed = dropped.bounding_narrowed, "privileges dropped");
    let config = args.config.clone();
    agent.set_loader(Box::new(move || load(config.as_ref(), &over).map(|(c, _)| c).map_err(|e| format!("{e:#}"))));
    tracing::info!(
        config = %source,
        http = %agent.http_addr(),
        store = %store_path.display(),
        operations,
        responder,
        "ipsla agent running: metrics at http://{}/metrics, runs at http://{}/api/v1/operations",
        agent.http_addr(),
        agent.http_addr()
    );
    // handlers before READY=1: a SIGTERM right after it must stop us cleanly, not by default action
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut term, mut int, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?)
    };
    let status = |n: usize| format!("{n} operations; metrics at http://{}/metrics", agent.http_addr());
    crate::notify::ready(&status(operations));
    std::thread::scope(|scope| {
        let _watchdog = crate::notify::watchdog(scope, || agent.healthy());
        rt.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        crate::notify::reloading();
                        // a bad file leaves the running configuration as it is
                        match agent.reload_from_source() {
                            Ok(r) => crate::notify::ready(&status(r.kept.len() + r.changed.len() + r.added.len())),
                            Err(e) => {
                                tracing::error!("reload failed, configuration unchanged: {e}");
                                crate::notify::ready("reload failed, configuration unchanged");
                            }
                        }
                    }
                }
            }
            anyhow::Ok(())
        })
    })?;
    crate::notify::stopping();
    tracing::info!("shutting down: cancelling the runs in flight (a second SIGINT or SIGTERM exits at once)");
    let (stopped, done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        agent.stop();
        let _ = stopped.send(());
    });
    rt.block_on(async {
        tokio::select! {
            _ = done => Ok(()),
            _ = term.recv() => Err(()),
            _ = int.recv() => Err(()),
        }
    })
    .or_else(|()| {
        // the store commits each run as it is written: nothing completed is lost by not waiting
        tracing::warn!("second signal: exiting without waiting for the agent to stop");
        std::process::exit(1)
    })
}
