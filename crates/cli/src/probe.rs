//! `ipsla probe OPERATION TARGET`: runs one operation (or `--count` of them, `--frequency` apart,
//! or until Ctrl-C with `--forever`) against a Cisco or ipsla responder (or, for ICMP, any host)
//! and prints IOS-style statistics or JSON. While a run goes, one line per reply or loss as it
//! happens (ping and irtt style) when stdout is a terminal or with `--verbose`. Ctrl-C stops the
//! run in flight and prints the statistics so far. Exit status 0 when every completed run
//! returned OK, 1 otherwise, 2 on a usage or set-up error.

use anyhow::{Result, anyhow};
use clap::{Arg, ArgAction, ArgMatches, Command};
use ipsla_agent::engine::Engine;
use ipsla_agent::ops::OperationDef;
use ipsla_agent::ops::{self, Flag, Key, Kind, Namer, Ty};
use ipsla_agent::report::{self, Context, Report};
use ipsla_agent::runner::{self, RunContext, RunError, RunOutcome};
use ipsla_core::ops::{ProbeEvent, ReturnCode};
use ipsla_core::stats::Acc;
use ipsla_net::clock::wall_now;
use ipsla_net::probe::Hooks;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Runs to make; `None`: until Ctrl-C (`--forever`, `--count 0`).
    count: Option<u32>,
    json: bool,
    samples: bool,
    /// The live lines: `Some(true)` with --verbose, `Some(false)` with --quiet, `None`: when
    /// stdout is a terminal.
    live: Option<bool>,
}

const PROBE_ONLY: &[&str] = &["target", "count", "json", "samples", "forever", "verbose", "quiet"];

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
            .help("Run the operation this many times, --frequency apart; 0: until Ctrl-C (as --forever)"),
    )
    .arg(
        Arg::new("forever")
            .long("forever")
            .action(ArgAction::SetTrue)
            .conflicts_with("count")
            .help("Run until Ctrl-C (SIGINT), then print the statistics so far"),
    )
    .arg(
        Arg::new("verbose").short('v').long("verbose").action(ArgAction::SetTrue).help(
            "One line per reply or loss as it happens, also when stdout is not a terminal (with --json: on stderr)",
        ),
    )
    .arg(
        Arg::new("quiet")
            .short('q')
            .long("quiet")
            .action(ArgAction::SetTrue)
            .conflicts_with("verbose")
            .help("No line per reply or loss and no progress line: only the statistics"),
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
            count: match sub.get_one::<u32>("count").copied().unwrap_or(1) {
                _ if sub.get_flag("forever") => None,
                0 => None,
                n => Some(n),
            },
            json: sub.get_flag("json"),
            samples: sub.get_flag("samples"),
            live: if sub.get_flag("verbose") {
                Some(true)
            } else if sub.get_flag("quiet") {
                Some(false)
            } else {
                None
            },
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
    count: Option<u32>,
    json: bool,
    samples: bool,
    live: Option<bool>,
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
    // the agent's frequency when given (same checks); otherwise, like ping, one run a second (or
    // one per train, when sending it takes longer): a run that waits for its timeout skips slots
    if !t.contains_key("frequency") {
        def.schedule.frequency = def.spec.op.train().map_or(Duration::ZERO, |(_, d)| d).max(Duration::from_secs(1));
    }
    Ok(Plan { def, count: args.count, json: args.json, samples: args.samples, live: args.live })
}

pub fn main(args: ProbeArgs) -> Result<std::process::ExitCode> {
    let p = plan(args)?;
    // a worker thread drives TCP (tcp-connect, TWAMP-Control) and Ctrl-C while a run blocks this one
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let interrupted = std::sync::Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
            }
            // a second Ctrl-C does not wait for the statistics
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    }
    let mut successes = 0u32;
    let mut failures = 0u32;
    let mut all_rtt = Acc::default();
    let (mut sent, mut received) = (0u64, 0u64);
    let spec = p.def.spec.clone();
    let live_lines = p.live.unwrap_or(!p.json && std::io::stdout().is_terminal());
    let progress = p.live != Some(false)
        && !p.json
        && std::io::stderr().is_terminal()
        && spec.op.train().is_some_and(|(_, d)| d > Duration::from_secs(2));
    let live =
        Live::new(spec.target_label(), live_lines, p.json, progress.then(|| spec.op.train().unwrap_or_default().0));
    let on_event = |e: &ProbeEvent| live.event(e);
    let stop = || interrupted.load(Ordering::SeqCst);
    let ctx = |sequence| RunContext {
        sequence,
        rt: rt.handle(),
        hooks: Hooks { events: Some(&on_event), cancelled: Some(&stop) },
    };
    // the agent's engine with this one operation: the same schedule grid (a run that overruns
    // skips its slot), sequences and reactions
    let mut engine = Engine::new(std::slice::from_ref(&p.def), Vec::new(), Instant::now(), wall_now(), rand::random());
    let mut runs = 0u32;
    while p.count.is_none_or(|c| runs < c) && !stop() {
        let (jobs, _) = engine.poll_due(Instant::now());
        let Some(job) = jobs.into_iter().next() else {
            let next = engine.poll_timeout().unwrap_or_else(Instant::now);
            while Instant::now() < next && !stop() {
                std::thread::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            }
            continue;
        };
        runs = job.run;
        let start_wall = wall_now();
        live.start(job.run);
        let outcome = runner::run(&spec, &ctx(job.sequence));
        live.end();
        let RunOutcome { result: r, clock: cs, detail } = match outcome {
            Err(RunError::Cancelled) => {
                // Ctrl-C: what this run saw so far counts in the summary, as in ping
                let (s, n, rtt) = live.tally();
                sent += s;
                received += n;
                all_rtt.merge(&rtt);
                break;
            }
            o => o?,
        };
        engine.handle_result(Instant::now(), job.id, Some(&r));
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
        let report =
            Report { detail, ..Report::new(Context::of(&spec, p.def.id, job.run, start_wall, cs, p.samples), &r) };
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

/// The live view of the runs: a line per reply or loss (ping and irtt style) and a progress line
/// for long runs on a terminal, fed the operation's events on the thread that runs it. It also
/// counts what the run in flight has seen, for the summary when Ctrl-C cancels it.
struct Live {
    target: String,
    lines: bool,
    /// The lines go to stderr (with --json, stdout holds only the documents).
    to_stderr: bool,
    /// Probes per run, when a progress line is drawn.
    progress: Option<u32>,
    state: Mutex<LiveRun>,
}

#[derive(Default)]
struct LiveRun {
    run: u32,
    sent: u64,
    received: u64,
    lost: u64,
    rtt: Acc,
    /// RTT of the previous reply in sequence order, for IPDV.
    prev: Option<(u32, i64)>,
    drawn: Option<Instant>,
}

impl Live {
    fn new(target: String, lines: bool, json: bool, progress: Option<u32>) -> Live {
        Live { target, lines, to_stderr: json, progress, state: Mutex::new(LiveRun::default()) }
    }

    fn start(&self, run: u32) {
        if let Ok(mut s) = self.state.lock() {
            *s = LiveRun { run, ..LiveRun::default() };
        }
    }

    fn end(&self) {
        if self.progress.is_some() {
            crate::out::eprint("\r\x1b[K");
        }
    }

    /// (sent, received, RTTs) of the run in flight.
    fn tally(&self) -> (u64, u64, Acc) {
        self.state.lock().map(|s| (s.sent, s.received, s.rtt)).unwrap_or_default()
    }

    fn event(&self, e: &ProbeEvent) {
        let Ok(mut s) = self.state.lock() else { return };
        let ms = |ns: i64| ns as f64 / 1e6;
        let line = match *e {
            ProbeEvent::Sent { .. } => {
                s.sent += 1;
                None
            }
            ProbeEvent::Reply { sample: x, one_way } => {
                // the line is written only when it is shown: at 1,000 replies a second the
                // formatting alone is a measurable share of the prober's CPU
                let mut l = self.lines.then(|| {
                    let mut l =
                        format!("reply from {}: run={} seq={} rtt={:.3} ms", self.target, s.run, x.seq, ms(x.rtt));
                    if one_way {
                        l += &format!(" sd={:.3} ms ds={:.3} ms", ms(x.sd), ms(x.ds));
                    }
                    l
                });
                let mut add = |words: std::fmt::Arguments<'_>| {
                    if let Some(l) = &mut l {
                        let _ = std::fmt::Write::write_fmt(l, words);
                    }
                };
                if x.duplicate {
                    add(format_args!(" (DUP!)"));
                } else if x.late {
                    add(format_args!(" (late: after the timeout, not counted)"));
                } else {
                    s.received += 1;
                    s.rtt.add(x.rtt);
                    // IPDV between consecutive probes (none for the first reply, or after a gap)
                    if let Some((seq, rtt)) = s.prev
                        && seq + 1 == x.seq
                    {
                        add(format_args!(" ipdv={:+.3} ms", ms(x.rtt - rtt)));
                    }
                    s.prev = Some((x.seq, x.rtt));
                }
                // a reply redraws the progress line even when no line is shown
                Some(l.unwrap_or_default())
            }
            ProbeEvent::Lost { seq } => {
                s.lost += 1;
                Some(if self.lines {
                    format!("no reply from {}: run={} seq={seq} lost (timeout)", self.target, s.run)
                } else {
                    String::new()
                })
            }
        };
        let redraw = self.progress.is_some()
            && (line.is_some() || s.drawn.is_none_or(|t| t.elapsed() > Duration::from_millis(200)));
        if redraw {
            crate::out::eprint("\r\x1b[K");
        }
        if let (true, Some(l)) = (self.lines, line) {
            if self.to_stderr {
                crate::out::eprintln(format_args!("{l}"));
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{l}");
                let _ = out.flush();
            }
        }
        if let (true, Some(packets)) = (redraw, self.progress) {
            crate::out::eprint(format_args!(
                "{:>6}/{packets} probes sent, {} replies, {} lost",
                s.sent, s.received, s.lost
            ));
            s.drawn = Some(Instant::now());
        }
    }
}
