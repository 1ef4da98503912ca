//! `ipsla`: the one binary. `ipsla responder` answers Cisco IP SLA control (v1 on UDP 1967,
//! RFC 6812 v2 on UDP 1167) and the probes that follow; `ipsla probe` runs one source operation;
//! `ipsla agent` is the daemon and `ipsla show ...` asks it.
#![forbid(unsafe_code)]

mod agent;
mod generate;
mod notify;
mod out;
mod probe;
mod responder;
mod show;

use clap::{Parser, Subcommand};

/// Cisco IP SLA compatible responder.
#[derive(Debug, Parser)]
#[command(name = "ipsla", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer IP SLA control messages and probes (like IOS `ip sla responder`).
    #[command(
        after_help = "Example:\n  ipsla responder --listen 192.0.2.1 --udp-echo 192.0.2.1:7 --stamp 192.0.2.1:862      \
                            (v1 and v2 control, a permanent udp-echo port, a STAMP reflector)\n  \
                            ipsla responder --status      (the running responder's sessions and counters)"
    )]
    Responder(Box<responder::ResponderArgs>),
    /// Run one operation against a responder (or any host, for ICMP) and print its statistics.
    #[command(after_help = "Example:\n  ipsla probe udp-jitter 192.0.2.10 --count 5      \
                            (each operation kind has its own flags and example: ipsla probe KIND --help)")]
    Probe(Box<probe::ProbeArgs>),
    /// The daemon: scheduled operations, the responder, SQLite history, Prometheus and JSON over HTTP.
    #[command(after_help = "Example:\n  ipsla agent --config /etc/ipsla/agent.toml --check      \
                            (validate; every key is in examples/agent.toml)\n  \
                            ipsla agent --config /etc/ipsla/agent.toml --http 127.0.0.1:9167")]
    Agent(Box<agent::AgentArgs>),
    /// Ask a running agent (IOS `show ip sla statistics`, `show track`, `show ip sla responder`).
    #[command(after_help = "Example:\n  ipsla show statistics 10 --agent http://192.0.2.5:9167")]
    Show(Box<show::ShowArgs>),
    /// Write the manual pages and shell completions into a directory (for packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    use std::io::IsTerminal;
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // systemd sets JOURNAL_STREAM when stderr goes to the journal, which stamps every line itself
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        log.without_time().init();
    } else {
        log.init();
    }
    let result = match cli.command {
        Command::Responder(args) => responder::main(*args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Probe(args) => probe::main(*args),
        Command::Agent(args) => agent::main(*args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Show(args) => show::main(*args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Generate(args) => generate::main(args).map(|()| std::process::ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) if out::is_broken_pipe(&e) => std::process::ExitCode::from(out::BROKEN_PIPE_STATUS),
        Err(e) => {
            out::eprintln(format_args!("ipsla: {e:#}"));
            std::process::ExitCode::from(2)
        }
    }
}
