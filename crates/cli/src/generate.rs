//! `ipsla generate DIR` (hidden): the manual pages and shell completions that packages install,
//! written from the clap definitions of this binary and the agent's configuration registry, so
//! that neither can drift from what the binary accepts.
//!
//! `DIR/man/`: ipsla(1), one page per subcommand (ipsla-agent(1), ...), ipsla-agent.toml(5).
//! `DIR/completions/`: `ipsla.bash`, `_ipsla` (zsh), `ipsla.fish`.
//!
//! A subcommand rather than a build script or an xtask: the clap definitions live in this binary
//! (the `Cli` type is private to it, and `ipsla probe`'s flags are built at run time from the
//! registry), so the binary is the one place that can print them; packaging runs the release
//! binary it ships.

use anyhow::{Context, Result};
use clap::{Args, Command, CommandFactory};
use ipsla_agent::ops::reference::{flag_words, type_words};
use ipsla_agent::ops::{Key, REGISTRY, common::COMMON};
use roff::{Roff, bold, italic, roman};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write `man/` and `completions/` into (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// The public command: the `Cli` definition without the hidden subcommands (completions would
/// otherwise offer `generate`).
pub fn public_command() -> Command {
    let full = crate::Cli::command();
    let mut cmd = Command::new("ipsla")
        .version(full.get_version().map(str::to_string).unwrap_or_default())
        .propagate_version(true)
        .subcommand_required(true)
        .arg_required_else_help(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

pub fn main(args: GenerateArgs) -> Result<()> {
    let man = args.dir.join("man");
    let completions = args.dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut cmd = public_command();
    cmd.build();
    let manual = |c: Command| clap_mangen::Man::new(c).manual("ipsla manual").source(source());
    write(&man.join("ipsla.1"), &render(manual(cmd.clone()))?)?;
    pages(&man, &cmd, "ipsla", &manual)?;
    write(&man.join("ipsla-agent.toml.5"), &config_page(&cmd))?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "ipsla.bash"),
        (clap_complete::Shell::Zsh, "_ipsla"),
        (clap_complete::Shell::Fish, "ipsla.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "ipsla", &mut out);
        write(&completions.join(file), &String::from_utf8(out).context("completion script is not UTF-8")?)?;
    }
    println!("wrote the manual pages to {} and the completions to {}", man.display(), completions.display());
    Ok(())
}

/// One page per subcommand, all the way down: `ipsla probe udp-jitter` is ipsla-probe-udp-jitter(1),
/// the name clap_mangen gives it in the SUBCOMMANDS section of ipsla-probe(1).
fn pages(man: &Path, parent: &Command, prefix: &str, manual: &dyn Fn(Command) -> clap_mangen::Man) -> Result<()> {
    for sub in parent.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("{}-{}", prefix.replace(' ', "-"), sub.get_name());
        let bin = format!("{prefix} {}", sub.get_name());
        let page = sub.clone().name(&name).bin_name(&bin).display_name(&name);
        write(&man.join(format!("{name}.1")), &render(manual(page))?)?;
        pages(man, sub, &bin, manual)?;
    }
    Ok(())
}

fn source() -> String {
    format!("ipsla {}", env!("CARGO_PKG_VERSION"))
}

fn render(man: clap_mangen::Man) -> Result<String> {
    let mut out = Vec::new();
    man.render(&mut out)?;
    Ok(String::from_utf8(out)?)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Markdown code spans (the registry's words are written for docs/operation-keys.md) as plain text.
fn plain(s: &str) -> String {
    s.replace('`', "")
}

/// One key as a tagged paragraph: the name in bold, what it takes, then its meaning.
fn key_item(r: &mut Roff, name: &str, value: &str, help: &str) {
    r.control("TP", []).text([bold(name), roman(" ("), italic(value), roman(")")]).text([roman(help)]);
}

/// The `[responder]` keys: those with a flag of `ipsla responder` take its help text (one source
/// for both); the others are file-only and described here.
const RESPONDER: &[(&str, &str, &str)] = &[
    ("listen", "list of addresses", ""),
    ("v1_port", "integer", ""),
    ("v2_port", "integer", ""),
    ("v1", "true / false", "Listen for v1 control messages (default true; --no-v1 turns it off)."),
    ("v2", "true / false", "Listen for RFC 6812 v2 control messages (default true; --no-v2 turns it off)."),
    ("allow", "list of prefixes", ""),
    ("port_range", "text", ""),
    ("max_sessions", "integer", ""),
    ("max_sessions_per_source", "integer", ""),
    ("max_duration", "duration", ""),
    ("control_rate", "number", ""),
    ("control_burst", "integer", ""),
    ("keys_file", "file path", ""),
    ("require_auth", "true / false", ""),
    ("timestamp_window", "duration", "How far an authenticated request's timestamp may be from our clock."),
    (
        "kernel_timestamps",
        "true / false",
        "Kernel receive timestamps (default true; --no-kernel-timestamps turns them off).",
    ),
    (
        "t3_calibration",
        "true / false",
        "Add the learned kernel send delay to T3 (default true; --no-t3-calibration turns it off).",
    ),
    ("status_socket", "file path", ""),
    ("udp_echo", "list of ADDR:PORT", ""),
    ("tcp_connect", "list of ADDR:PORT", ""),
    ("udp_jitter", "list of ADDR:PORT", ""),
    ("stamp", "list of ADDR:PORT", ""),
    ("stamp_stateful", "true / false", ""),
    ("stamp_key_file", "file path", ""),
    ("twamp", "list of ADDR:PORT", ""),
    ("twamp_modes", "text", ""),
    ("twamp_keys_file", "file path", ""),
    ("twamp_test_ports", "text", ""),
    ("twamp_light", "list of ADDR:PORT", ""),
    ("twamp_light_stateful", "true / false", ""),
    ("workers", "integer", ""),
    ("steer_by_cpu", "true / false", ""),
    ("twamp_max_connections", "integer", "Most TWAMP control connections at once (default 64)."),
    (
        "twamp_max_connections_per_source",
        "integer",
        "Most TWAMP control connections at once from one address (default 8).",
    ),
    ("twamp_max_sessions", "integer", "Most test sessions one control connection may request (default 16)."),
    ("twamp_setup_timeout", "duration", "Time from the connection to the Set-Up-Response (default 30s)."),
    (
        "twamp_servwait",
        "duration",
        "SERVWAIT: an idle control connection is closed after it (default 900s, RFC 5357 §3.8).",
    ),
    (
        "twamp_refwait",
        "duration",
        "REFWAIT: a session without test packets ends after it (default 900s, RFC 5357 §4.2).",
    ),
    (
        "twamp_connection_rate",
        "number",
        "New TWAMP control connections per second from one address, burst twice that (default 20; 0 = no limit).",
    ),
];

type Section = (&'static str, &'static str, &'static [(&'static str, &'static str, &'static str)]);

/// The tables other than `[responder]` and `[[operation]]`, as examples/agent.toml documents them.
const SECTIONS: &[Section] = &[
    (
        "[agent]",
        "The daemon itself. Every key is optional.",
        &[
            (
                "http",
                "ADDR:PORT",
                "Listen address of /metrics, /-/healthy, the JSON API and the pages (default 127.0.0.1:9167; --http overrides it).",
            ),
            (
                "store",
                "file path",
                "The SQLite history, one row per completed run (default ipsla-agent.db, relative to the working directory; --store overrides it).",
            ),
            ("retention", "duration", "Runs older than this are deleted, checked hourly (default 7d)."),
            ("store_max_size", "size", "Largest store, in KiB/MiB/GiB/TiB; the oldest runs go first (default 1GiB)."),
            ("workers", "integer", "Runs in parallel, each on a thread (default 16)."),
            (
                "route_protocol",
                "integer",
                "rtm_protocol of the routes [[route]] installs (default 167: ip route show proto 167).",
            ),
            (
                "probe_concurrency",
                "integer",
                "/probe runs at once; more are answered 429 (default 4; 0 turns /probe off).",
            ),
            (
                "metrics_histograms",
                "true / false",
                "Per-probe histograms (ipsla_rtt_seconds, ipsla_one_way_delay_seconds, ipsla_ipdv_seconds) in /metrics (default false: latest values and counters, a few hundred bytes per operation).",
            ),
        ],
    ),
    (
        "[[operation.reaction]]",
        "Threshold reactions of an operation (IOS ip sla reaction-configuration N react ELEMENT).",
        &[
            (
                "element",
                "text",
                "rtt, jitterAvg, jitterSDAvg, jitterDSAvg, packetLossSD, packetLossDS, packetMIA, packetLateArrival, packetOutOfSequence, packetLoss, mos, icpif, latencySDAvg, latencyDSAvg, timeout, connectionLoss, verifyError, pathChange (path-echo and path-jitter).",
            ),
            (
                "threshold_type",
                "text",
                "never | immediate | \"consecutive N\" | \"xofy X Y\" | \"average N\" (default never, as IOS).",
            ),
            (
                "threshold",
                "[rising, falling]",
                "The rising and falling thresholds, in the element's unit (default per element, as the MIB).",
            ),
            (
                "action",
                "text",
                "none | alert | trigger | alert-and-trigger | trap | trap-and-trigger (default alert); trap: an SNMP notification through [snmp].",
            ),
        ],
    ),
    (
        "[[group]]",
        "Group schedules (IOS ip sla group schedule): the operations start spread over the period.",
        &[
            ("id", "integer", "The group's number."),
            ("operations", "text", "IOS operation list: \"1-10,12,20-29\"."),
            ("schedule_period", "duration", "The period the starts are spread over."),
            ("frequency", "text", "\"60s\", or \"range 80-100\" (the random scheduler); default the period."),
            ("life", "duration", "\"forever\" or a duration (default forever)."),
            ("start", "text", "now | pending | \"after DURATION\" | \"at HH:MM[:SS]\" (default now)."),
            ("ageout", "duration", "Delete this long after the life ends."),
            ("recurring", "true / false", "Start again every day at the same time."),
        ],
    ),
    (
        "[[track]]",
        "Tracks (IOS track N ip sla OP state|reachability, and track lists).",
        &[
            ("id", "integer", "The track's number."),
            ("operation", "integer", "The operation it follows (track N ip sla OP)."),
            ("mode", "text", "state (up only on OK) | reachability (OK or over threshold); default state."),
            ("list", "text", "and | or | weight: a list of other tracks instead of an operation."),
            ("members", "list of integers", "The tracks of a list."),
            ("weights", "list of integers", "Weights of the members, for list = \"weight\"."),
            ("up", "integer", "Weight at or above which a weight list is up."),
            ("down", "integer", "Weight at or below which a weight list is down."),
            ("delay_up", "duration", "Report up only after this long up (0-180 s)."),
            ("delay_down", "duration", "Report down only after this long down (0-180 s)."),
        ],
    ),
    (
        "[[route]]",
        "Routes installed while a track is up (failover); one without track is always installed. Needs CAP_NET_ADMIN.",
        &[
            ("destination", "prefix", "IPv4 or IPv6 prefix, e.g. 0.0.0.0/0."),
            ("gateway", "IP address", "Next hop (and/or device)."),
            ("device", "text", "Outgoing interface."),
            ("metric", "integer", "Lower wins."),
            ("table", "integer", "Routing table (default 254, main)."),
            ("track", "integer", "The track that must be up."),
        ],
    ),
    (
        "[[alert]]",
        "Alert sinks: every reaction transition with an alert action and every track change, as one JSON object.",
        &[
            ("type", "text", "webhook | exec."),
            ("name", "text", "The sink's name in logs and metrics (default TYPE-INDEX, e.g. webhook-0)."),
            ("events", "list of words", "Any of \"reaction\", \"track\" (default both)."),
            ("timeout", "duration", "Per attempt (webhook, default 5s) or for the whole run (exec, default 10s)."),
            ("url", "text", "Webhook: http://HOST[:PORT][/PATH] or https://..."),
            (
                "ca_file",
                "file path",
                "Webhook over https: PEM file of the CA certificates to trust instead of the platform's.",
            ),
            ("retries", "integer", "Webhook: attempts after the first (default 3)."),
            ("backoff", "duration", "Webhook: wait before the first retry, doubling after each (default 1s)."),
            ("headers", "table", "Webhook: extra request headers."),
            (
                "command",
                "list of words",
                "Exec: program and arguments; the event is one JSON line on its standard input.",
            ),
        ],
    ),
    (
        "[[remote_write]]",
        "Prometheus remote write: every stored run's values, at the run's start, pushed to Prometheus, \
         VictoriaMetrics, Mimir or Thanos; the store is the queue, so an outage or a restart loses nothing.",
        &[
            ("url", "text", "http[s]://HOST[:PORT]/PATH of the receiver, e.g. http://127.0.0.1:9090/api/v1/write."),
            ("basic_auth", "table", "{ username = \"...\", password = \"...\" }: HTTP basic authentication."),
            ("bearer_token", "text", "Authorization: Bearer TOKEN (not with basic_auth)."),
            ("ca_file", "file path", "https: PEM file of the CA certificates to trust instead of the platform's."),
            ("labels", "table", "Extra labels on every series, e.g. { site = \"paris\" }."),
            ("batch", "integer", "Runs per request, 1 to 100000 (default 500)."),
            ("timeout", "duration", "Per request (default 30s)."),
            (
                "max_backoff",
                "duration",
                "Longest wait between two retries of a 5xx, 429 or connection error (default 30s).",
            ),
            (
                "headers",
                "table",
                "Extra request headers, e.g. { X-Scope-OrgID = \"tenant-1\" } for a multi-tenant Mimir.",
            ),
        ],
    ),
    (
        "[snmp]",
        "Serve CISCO-RTTMON-MIB (1.3.6.1.4.1.9.9.42) as an AgentX subagent of the host's SNMP master agent (net-snmp snmpd with master agentx); absent: no SNMP.",
        &[(
            "agentx",
            "unix:/PATH | tcp:ADDR:PORT",
            "Where the master listens for subagents, as snmpd's agentXSocket (default unix:/var/agentx/master). Takes effect at a restart.",
        )],
    ),
    (
        "[mesh]",
        "A shared mesh file: its tests run from this agent's site to every other site (docs/mesh.md); re-read on reload.",
        &[
            ("file", "file path", "The mesh file (TOML: [[site]], [[test]], [responder]); --mesh overrides it."),
            ("site", "text", "This agent's site, one of the file's [[site]] names; --site overrides it."),
            (
                "url",
                "URL",
                "http[s]:// URL the file is kept up to date from: fetched every poll; a valid file that differs replaces the local copy (file) and is reloaded; a failed fetch or a bad file leaves the copy running.",
            ),
            ("poll", "duration", "How often url is fetched (default 5m; only with url)."),
        ],
    ),
];

/// ipsla-agent.toml(5): every key the agent's file takes. The operation keys are the registry's
/// (the same table the loader validates against); the responder's help is its flags'.
fn config_page(cmd: &Command) -> String {
    let mut r = Roff::new();
    r.control("TH", ["IPSLA-AGENT.TOML", "5", "", &source(), "ipsla manual"]);
    r.control("SH", ["NAME"]).text([roman("ipsla-agent.toml - configuration file of ipsla agent")]);
    r.control("SH", ["SYNOPSIS"]).text([bold("/etc/ipsla/agent.toml")]);
    r.control("SH", ["DESCRIPTION"]).text([roman(
        "The file ipsla agent --config reads (TOML). Tables: [agent], [responder] (present: the agent \
         answers IP SLA control too), [[operation]] (with [[operation.reaction]]), [[group]], [[track]], \
         [[route]], [[alert]], [[remote_write]], [snmp], [mesh]. An unknown key is refused with the key named; a key an operation type \
         does not take is refused with the types that take it. ipsla agent --check --config FILE \
         validates a file without starting anything; SIGHUP (systemctl reload ipsla-agent) re-reads it.",
    )]);
    r.control("PP", []).text([roman(
        "Durations are written \"20ms\", \"5s\", \"1h\", \"7d\". A key left out takes the default shown.",
    )]);
    let (agent, rest) = SECTIONS.split_first().expect("[agent] comes first");
    section(&mut r, agent);
    r.control("SH", ["[responder]"]).text([roman(
        "The keys of ipsla responder; the command-line flag of the same name (with dashes) overrides \
         the file there. Present and empty: every address, v1 control on UDP 1967, v2 on UDP 1167.",
    )]);
    let responder = cmd.find_subcommand("responder").expect("ipsla responder exists");
    for (key, value, words) in RESPONDER {
        let long = key.replace('_', "-");
        let from_flag = responder
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .and_then(|a| a.get_help())
            .map(|h| h.to_string());
        let help = from_flag.unwrap_or_else(|| words.to_string());
        key_item(&mut r, key, value, &help);
    }
    r.control("SH", ["[[operation]]"]).text([roman(format!(
        "One table per operation (IOS ip sla N). type is one of: {}. The keys below are those every type \
         takes; then each type's own. The form in parentheses after the value is the flag of ipsla probe TYPE.",
        REGISTRY.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    ))]);
    r.control("SS", ["Every type"]);
    keys(&mut r, COMMON.iter());
    for kind in REGISTRY {
        r.control("SS", [kind.name()]);
        let port = match kind.default_port() {
            Some(p) => format!(" Default port {p}."),
            None => " No port.".into(),
        };
        r.text([roman(format!("{}.{port}", kind.about()))]);
        let own: Vec<&Key> = kind.keys().iter().flat_map(|g| g.iter()).collect();
        if own.is_empty() {
            r.control("PP", []).text([roman("No keys beyond those of every type.")]);
        }
        keys(&mut r, own.into_iter());
    }
    for s in rest {
        section(&mut r, s);
    }
    r.control("SH", ["FILES"]);
    for (path, what) in [
        ("/etc/ipsla/agent.toml", "this file (a conffile of the Debian package)"),
        ("/var/lib/ipsla", "the state directory of the ipsla-agent unit: the SQLite store"),
        ("/run/ipsla", "its runtime directory: the responder's status socket"),
    ] {
        r.control("TP", []).text([bold(path)]).text([roman(what)]);
    }
    r.control("SH", ["EXAMPLES"]).text([roman(
        "ipsla agent --print-default prints a working file (a responder on loopback and one operation \
         of each kind against it); /usr/share/doc/ipsla/examples/agent.toml shows every key.",
    )]);
    r.control("SH", ["SEE ALSO"]).text([
        bold("ipsla"),
        roman("(1), "),
        bold("ipsla-agent"),
        roman("(1), "),
        bold("ipsla-probe"),
        roman("(1), "),
        bold("ipsla-responder"),
        roman("(1)"),
    ]);
    r.render()
}

fn keys<'a>(r: &mut Roff, keys: impl Iterator<Item = &'a Key>) {
    for k in keys {
        let value = format!("{}; {}", plain(&type_words(k.ty)), plain(&flag_words(k)));
        key_item(r, k.name, &value, k.help);
    }
}

fn section(r: &mut Roff, (title, about, keys): &Section) {
    r.control("SH", [*title]).text([roman(*about)]);
    for (key, value, help) in *keys {
        key_item(r, key, value, help);
    }
}
