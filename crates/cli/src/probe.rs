//! `ipsla probe OPERATION TARGET`: runs one operation (or `--count` of them, `--frequency` apart)
//! against a Cisco or ipsla responder (or, for ICMP, any host) and prints IOS-style statistics or
//! JSON. Exit status 0 when every run returned OK, 1 otherwise, 2 on a usage or set-up error.

use anyhow::{Result, anyhow, bail};
use clap::{Arg, ArgAction, ArgMatches, Command};
use ipsla_agent::engine::Engine;
use ipsla_agent::ops::OperationDef;
use ipsla_agent::ops::{self, Flag, Key, Kind, Namer, Ty};
use ipsla_agent::report::{self, Context, Report};
use ipsla_agent::runner::{self, RunOutcome};
use ipsla_core::ops::ReturnCode;
use ipsla_core::stats::Acc;
use ipsla_net::clock::wall_now;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// `ipsla probe KIND TARGET [FLAGS]`: one subcommand per registered operation kind, its flags
/// generated from the kind's keys ([`ipsla_agent::ops`]), so that a flag and the configuration
/// key it stands for cannot drift.
#[derive(Debug)]
pub struct ProbeArgs {
    kind: &'static str,
    target: String,
    /// (key, the values given on the command line)
    values: Vec<(&'static Key, Vec<String>)>,
    count: u32,
    json: bool,
    samples: bool,
}

const PROBE_ONLY: &[&str] = &["target", "count", "json", "samples"];

fn kind_command(kind: &'static dyn Kind) -> Command {
    let mut c = Command::new(kind.name())
        .about(kind.about())
        .after_help(format!("Example:\n  {}", kind.example()))
        .arg(Arg::new("target").required(true).value_name("TARGET").help("Target host (name or address)"));
    for key in ops::all_keys(kind) {
        let Some(flag) = key.flag_name() else { continue };
        let mut a = Arg::new(key.name).long(flag).help(key.help);
        a = match (key.ty, key.flag) {
            (Ty::Bool, _) => a.action(ArgAction::SetTrue),
            (Ty::List, _) => a.action(ArgAction::Append).value_name("VALUE"),
            (Ty::Choice(words), _) => a.value_parser(clap::builder::PossibleValuesParser::new(words.iter().copied())),
            (Ty::Int, _) => a.value_name("N"),
            (Ty::Duration, _) => a.value_name("DURATION"),
            (Ty::Path, _) => a.value_name("FILE"),
            (Ty::Addr, _) => a.value_name("ADDR"),
            _ => a.value_name("VALUE"),
        };
        for alias in key.aliases {
            a = a.alias(*alias);
        }
        c = c.arg(a);
        if let Some((flag, value)) = key.shortcut {
            c = c.arg(
                Arg::new(flag)
                    .long(flag)
                    .action(ArgAction::SetTrue)
                    .conflicts_with(key.name)
                    .help(format!("Same as --{} {value}", key.flag_name().unwrap_or_default())),
            );
        }
    }
    c.arg(
        Arg::new("count")
            .short('c')
            .long("count")
            .value_parser(clap::value_parser!(u32))
            .default_value("1")
            .help("Run the operation this many times, --frequency apart"),
    )
    .arg(
        Arg::new("json")
            .long("json")
            .action(ArgAction::SetTrue)
            .help("Print JSON (one document per run, one per line; schema in docs/json-schema.md)"),
    )
    .arg(
        Arg::new("samples")
            .long("samples")
            .action(ArgAction::SetTrue)
            .help("With --json: add every reply (sequence, responder counter, RTT, SD, DS, late, duplicate)"),
    )
}

impl clap::FromArgMatches for ProbeArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let missing = || clap::Error::new(clap::error::ErrorKind::MissingSubcommand);
        let (name, sub) = m.subcommand().ok_or_else(missing)?;
        let kind = ops::find(name).ok_or_else(missing)?;
        let mut values = Vec::new();
        for key in ops::all_keys(kind) {
            if key.flag_name().is_none() || PROBE_ONLY.contains(&key.name) {
                continue;
            }
            let given: Vec<String> = match key.ty {
                Ty::Bool if sub.get_flag(key.name) => vec![(!matches!(key.flag, Flag::Negated(_))).to_string()],
                Ty::Bool => Vec::new(),
                _ => sub.get_many::<String>(key.name).map(|v| v.cloned().collect()).unwrap_or_default(),
            };
            let given = match key.shortcut {
                Some((flag, value)) if sub.get_flag(flag) => vec![value.to_string()],
                _ => given,
            };
            if !given.is_empty() {
                values.push((key, given));
            }
        }
        Ok(ProbeArgs {
            kind: kind.name(),
            target: sub.get_one::<String>("target").cloned().unwrap_or_default(),
            values,
            count: sub.get_one::<u32>("count").copied().unwrap_or(1),
            json: sub.get_flag("json"),
            samples: sub.get_flag("samples"),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for ProbeArgs {
    fn augment_args(cmd: Command) -> Command {
        cmd.subcommand_required(true).subcommands(ops::REGISTRY.iter().map(|k| kind_command(*k)))
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// A validated operation plus how often to run it and how to print it.
struct Plan {
    def: OperationDef,
    count: u32,
    json: bool,
    samples: bool,
}

/// The flags as an `[[operation]]` table, each value typed as its key wants.
fn table(args: &ProbeArgs) -> Result<toml::Table> {
    let mut t = toml::Table::new();
    t.insert("type".into(), args.kind.into());
    t.insert("target".into(), args.target.clone().into());
    for (key, given) in &args.values {
        let flag = format!("--{}", key.flag_name().unwrap_or_default());
        let one = || given.last().cloned().unwrap_or_default();
        let v = match key.ty {
            Ty::Bool => toml::Value::Boolean(one() == "true"),
            Ty::Int => {
                toml::Value::Integer(one().parse().map_err(|_| anyhow!("{flag}: \"{}\" is not an integer", one()))?)
            }
            Ty::List => toml::Value::Array(given.iter().cloned().map(toml::Value::String).collect()),
            _ => toml::Value::String(one()),
        };
        t.insert(key.name.into(), v);
    }
    Ok(t)
}

/// Validates the flags the same way the agent validates its configuration file, errors naming
/// the flags.
fn plan(args: ProbeArgs) -> Result<Plan> {
    let kind = ops::find(args.kind).ok_or_else(|| anyhow!("no operation {}", args.kind))?;
    let keys = ops::all_keys(kind);
    let t = table(&args)?;
    let mut def = ops::common::validate(&t, Namer::Cli(&keys), 1)?;
    if args.count == 0 {
        bail!("--count: 0 is out of range; allowed 1 or more");
    }
    // the agent's frequency when given (same checks); otherwise, like ping, one run a second (or
    // one per train, when sending it takes longer): a run that waits for its timeout skips slots
    if !t.contains_key("frequency") {
        def.schedule.frequency = def.spec.op.train().map_or(Duration::ZERO, |(_, d)| d).max(Duration::from_secs(1));
    }
    Ok(Plan { def, count: args.count, json: args.json, samples: args.samples })
}

pub fn main(args: ProbeArgs) -> Result<std::process::ExitCode> {
    let p = plan(args)?;
    // a worker thread drives TCP (tcp-connect, TWAMP-Control) while a run blocks this one
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut successes = 0u32;
    let mut failures = 0u32;
    let mut all_rtt = Acc::default();
    let (mut sent, mut received) = (0u64, 0u64);
    let spec = p.def.spec.clone();
    let progress_plan = spec.op.train();
    let show_progress =
        !p.json && std::io::stderr().is_terminal() && progress_plan.is_some_and(|(_, d)| d > Duration::from_secs(2));
    // the agent's engine with this one operation: the same schedule grid (a run that overruns
    // skips its slot), sequences and reactions
    let mut engine = Engine::new(std::slice::from_ref(&p.def), Vec::new(), Instant::now(), wall_now(), rand::random());
    let mut run = 0;
    while run < p.count {
        let (jobs, _) = engine.poll_due(Instant::now());
        let Some(job) = jobs.into_iter().next() else {
            let next = engine.poll_timeout().unwrap_or_else(Instant::now);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            continue;
        };
        run += 1;
        let start_wall = wall_now();
        let progress = show_progress.then(|| spawn_progress(progress_plan.unwrap_or_default()));
        let outcome = runner::run(&spec, job.sequence, rt.handle());
        engine.handle_result(Instant::now(), job.id, outcome.as_ref().ok().map(|o| &o.result));
        if let Some(stop) = progress {
            let _ = stop.send(());
            crate::out::eprint("\r\x1b[K");
        }
        let RunOutcome { result: r, clock: cs } = outcome?;
        if let Some(why) = &r.cause {
            crate::out::eprintln(format_args!("ipsla probe {}: {why}", spec.op.kind().name()));
        }
        if matches!(r.return_code, ReturnCode::Ok) {
            successes += 1;
        } else {
            failures += 1;
        }
        all_rtt.merge(&r.stats.rtt);
        sent += u64::from(r.stats.sent);
        received += u64::from(r.stats.received);
        let report = Report::new(Context::of(&spec, run, start_wall, cs, p.samples), &r);
        if p.json {
            crate::out::println(serde_json::to_string(&report)?)?;
        } else {
            crate::out::println(report::text(&report, successes, failures))?;
        }
    }
    if !p.json {
        crate::out::print(report::ping_summary(&spec.target.to_string(), sent, received, &all_rtt))?;
    }
    Ok(if failures == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

fn spawn_progress((packets, expected): (u32, Duration)) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let start = Instant::now();
        while rx.recv_timeout(Duration::from_millis(250)).is_err() {
            let frac = (start.elapsed().as_secs_f64() / expected.as_secs_f64().max(1e-9)).min(1.0);
            crate::out::eprint(format_args!(
                "\r{:>6}/{packets} probes sent ({:.0} s)",
                (frac * f64::from(packets)) as u32,
                start.elapsed().as_secs_f64()
            ));
        }
    });
    tx
}
