//! What the packages install: the manual pages and completions `ipsla generate` writes (from the
//! clap definitions and the operation registry), the shipped configuration files, the Debian
//! package's asset list and the container image definition (checked as text against the binary's
//! flags, paths and ports; no image is built here). docs/install.md describes them.

use crate::common::{AgentToml, InProcess, ipsla, on_path};
use ipsla_agent::ops::{REGISTRY, common::COMMON};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `ipsla generate DIR` into a fresh directory.
fn generated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = ipsla().arg("generate").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

/// The keys a table of the agent's file accepts, as the loader itself lists them when it refuses
/// an unknown one (serde's `expected one of` over the `deny_unknown_fields` structs).
fn accepted_keys(table: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, format!("{table}\nnot_a_key = 1\n")).unwrap();
    let out = ipsla().args(["agent", "--check", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    // serde lists two keys as "expected `a` or `b`", more as "expected one of `a`, `b`, ..."
    let list =
        err.split("expected one of ").nth(1).or_else(|| err.split("unknown field `not_a_key`, expected ").nth(1));
    let list = list.unwrap_or_else(|| panic!("no key list for {table:?}:\n{err}"));
    list.lines().next().unwrap().replace(" or ", ", ").split(", ").map(|k| k.trim_matches('`').to_string()).collect()
}

#[test]
fn generate_writes_one_page_per_subcommand_and_three_completions() {
    let _machine = crate::common::shared();
    let dir = generated();
    let mut want: BTreeSet<String> =
        ["ipsla.1", "ipsla-agent.1", "ipsla-probe.1", "ipsla-responder.1", "ipsla-show.1", "ipsla-agent.toml.5"]
            .map(String::from)
            .into();
    want.extend(REGISTRY.iter().map(|k| format!("ipsla-probe-{}.1", k.name())));
    want.extend(["configuration", "responder", "statistics", "summary", "track"].map(|s| format!("ipsla-show-{s}.1")));
    assert_eq!(names(&dir.path().join("man")), want);
    assert_eq!(names(&dir.path().join("completions")), ["_ipsla", "ipsla.bash", "ipsla.fish"].map(String::from).into());

    // the hidden subcommand is for packaging, not for people
    let top = std::fs::read_to_string(dir.path().join("man/ipsla.1")).unwrap();
    assert!(top.contains("ipsla\\-agent(1)") && !top.contains("generate"), "{top}");
    let bash = std::fs::read_to_string(dir.path().join("completions/ipsla.bash")).unwrap();
    assert!(bash.contains("udp-jitter") && !bash.contains("generate"));
    let probe = std::fs::read_to_string(dir.path().join("man/ipsla-probe-udp-jitter.1")).unwrap();
    assert!(probe.contains("ipsla probe udp\\-jitter") && probe.contains("\\-\\-codec"), "{probe}");
}

#[test]
fn manual_pages_format_without_warnings() {
    let _machine = crate::common::shared();
    let Some(man) = on_path("man") else {
        eprintln!("skipped: no man on PATH (apt-get install man-db)");
        return;
    };
    let dir = generated();
    let pages = names(&dir.path().join("man"));
    for page in &pages {
        let path = dir.path().join("man").join(page);
        let out = Command::new(&man).args(["--warnings", "-l"]).arg(&path).env("MANWIDTH", "80").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "man --warnings -l {page}:\n{err}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("NAME"), "{page} has no NAME section");
    }
}

#[test]
fn config_page_lists_every_operation_key_of_every_kind() {
    let _machine = crate::common::shared();
    let dir = generated();
    let page = std::fs::read_to_string(dir.path().join("man/ipsla-agent.toml.5")).unwrap();
    // roff escapes the dashes of a key's name: udp-jitter is written udp\-jitter
    let tagged = |key: &str| format!(".TP\n\\fB{}\\fR", key.replace('-', "\\-"));
    let every = page.split(".SS \"Every type\"").nth(1).expect("an 'Every type' section");
    for k in COMMON {
        assert!(every.contains(&tagged(k.name)), "common key {} is not in ipsla-agent.toml(5)", k.name);
    }
    for kind in REGISTRY {
        let heading = format!(".SS {}\n", kind.name());
        let section = page.split(&heading).nth(1).unwrap_or_else(|| panic!("no section for {}", kind.name()));
        let section = section.split(".SS").next().unwrap().split(".SH").next().unwrap();
        let own: Vec<_> = kind.keys().iter().flat_map(|g| g.iter()).collect();
        for k in &own {
            assert!(section.contains(&tagged(k.name)), "{}: key {} is not in its section", kind.name(), k.name);
        }
        assert_eq!(section.matches(".TP").count(), own.len(), "{}: keys listed", kind.name());
    }
}

#[test]
fn config_page_mentions_every_key_the_loader_accepts() {
    let _machine = crate::common::shared();
    let dir = generated();
    let page = std::fs::read_to_string(dir.path().join("man/ipsla-agent.toml.5")).unwrap();
    let top = accepted_keys("");
    assert_eq!(
        top,
        ["agent", "responder", "operation", "track", "group", "route", "alert", "remote_write", "snmp", "mesh"]
    );
    for t in &top {
        let single = ["agent", "responder", "snmp", "mesh"].contains(&t.as_str());
        let heading = if single { format!(".SH [{t}]") } else { format!(".SH [[{t}]]") };
        assert!(page.contains(&heading), "no section {heading}");
    }
    // each table's keys in that table's own section (a key of the same name elsewhere does not count)
    let op = "[[operation]]\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n[[operation.reaction]]";
    for (table, heading) in [
        ("[agent]", ".SH [agent]"),
        ("[responder]", ".SH [responder]"),
        ("[[track]]\nid = 1", ".SH [[track]]"),
        ("[[group]]", ".SH [[group]]"),
        ("[[route]]", ".SH [[route]]"),
        ("[[alert]]", ".SH [[alert]]"),
        ("[[remote_write]]", ".SH [[remote_write]]"),
        ("[mesh]", ".SH [mesh]"),
        (op, ".SH [[operation.reaction]]"),
    ] {
        let section = page.split(heading).nth(1).unwrap_or_else(|| panic!("no section {heading}"));
        let section = section.split("\n.SH").next().unwrap();
        let keys = accepted_keys(table);
        assert!(keys.len() >= 2, "{table}: {keys:?}");
        for k in &keys {
            assert!(section.contains(&format!(".TP\n\\fB{k}\\fR")), "{heading} key {k} is not in ipsla-agent.toml(5)");
        }
        assert_eq!(section.matches(".TP").count(), keys.len(), "{heading}: keys the loader does not accept");
    }
    // [snmp] has one key: serde names it alone ("expected `agentx`")
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("a.toml"), "[snmp]\nnot_a_key = 1\n").unwrap();
    let out = ipsla().args(["agent", "--check", "--config"]).arg(cfg.path().join("a.toml")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected `agentx`"), "{out:?}");
    let section = page.split(".SH [snmp]").nth(1).unwrap().split("\n.SH").next().unwrap();
    assert!(section.contains(".TP\n\\fBagentx\\fR"), "{section}");
    assert_eq!(section.matches(".TP").count(), 1, "{section}");
}

#[test]
fn completions_load_in_their_shells() {
    let _machine = crate::common::shared();
    let dir = generated();
    let bash = dir.path().join("completions/ipsla.bash");
    let out = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
    let out =
        Command::new("bash").arg("-c").arg(format!("source {} && complete -p ipsla", bash.display())).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "complete -o bashdefault -o default -o nosort -F _ipsla ipsla"
    );
    // `ipsla probe udp-jitter --co<TAB>` offers --codec and --control..., from the registry's flags
    let script = format!(
        "source {} && COMP_WORDS=(ipsla probe udp-jitter --cod) COMP_CWORD=3 && _ipsla ipsla --cod udp-jitter && echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "--codec", "{}", String::from_utf8_lossy(&out.stderr));
    for (shell, file, check) in [("zsh", "_ipsla", "-n"), ("fish", "ipsla.fish", "--no-execute")] {
        let Some(sh) = on_path(shell) else {
            eprintln!("{shell} not installed: its completion is not loaded");
            continue;
        };
        let out = Command::new(&sh).arg(check).arg(dir.path().join("completions").join(file)).output().unwrap();
        assert!(out.status.success(), "{shell} {check}: {}", String::from_utf8_lossy(&out.stderr));
        // loaded as the shell loads it: zsh's compinit finds `#compdef ipsla` on the fpath; fish
        // answers the same `--cod<TAB>` with the flag and its help
        let script = match shell {
            "zsh" => format!(
                "fpath=({} $fpath); autoload -U compinit; compinit -u -d {}; print -r -- ${{_comps[ipsla]}}",
                dir.path().join("completions").display(),
                dir.path().join("zcompdump").display()
            ),
            _ => format!(
                "source {}; complete -C 'ipsla probe udp-jitter --cod'",
                dir.path().join("completions/ipsla.fish").display()
            ),
        };
        let out = Command::new(&sh).arg("-c").arg(script).env("HOME", dir.path()).output().unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        match shell {
            "zsh" => assert_eq!(got.trim(), "_ipsla", "{}", String::from_utf8_lossy(&out.stderr)),
            _ => assert_eq!(
                got.lines().map(|l| l.split('\t').next().unwrap_or_default()).collect::<Vec<_>>(),
                ["--codec"],
                "{got}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

#[test]
fn shipped_configuration_runs_the_responder_and_measures_nothing() {
    let _machine = crate::common::shared();
    let cfg = repo().join("dist/deb/agent.toml");
    let out = ipsla().args(["agent", "--check", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: 0 operations, responder on, 0 alert sinks\n", cfg.display())
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    // where the units can write: the state directory and the runtime directory of ipsla-agent.service
    assert!(text.contains("store = \"/var/lib/ipsla/agent.db\""));
    assert!(text.contains("status_socket = \"/run/ipsla/responder.sock\""));
    let unit = std::fs::read_to_string(repo().join("dist/ipsla-agent.service")).unwrap();
    assert!(unit.contains("\nStateDirectory=ipsla\n") && unit.contains("\nRuntimeDirectory=ipsla\n"));

    let responder = repo().join("dist/deb/responder.toml");
    let out = ipsla()
        .args(["responder", "--config"])
        .arg(&responder)
        .args(["--status-socket", "/nonexistent/s", "--status"])
        .output()
        .unwrap();
    // the file parses: the failure is the missing socket, named, not the file
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/s") && !err.contains("responder.toml"), "{err}");
}

/// `[package.metadata.deb]` of crates/cli/Cargo.toml.
fn deb_metadata() -> toml::Table {
    let text = std::fs::read_to_string(repo().join("crates/cli/Cargo.toml")).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    t["package"]["metadata"]["deb"].as_table().unwrap().clone()
}

#[test]
fn deb_assets_exist_and_conffiles_are_shipped() {
    let _machine = crate::common::shared();
    let deb = deb_metadata();
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_string(), a[1].as_str().unwrap().to_string()))
        .collect();
    // what scripts/deb.sh builds or generates lives under target/; every other source is in the repository
    for (src, _) in &assets {
        if !src.contains("target/") {
            assert!(repo().join("crates/cli").join(src).exists(), "asset {src} is missing");
        }
    }
    let dests: BTreeSet<&str> = assets.iter().map(|(_, d)| d.as_str()).collect();
    for conf in deb["conf-files"].as_array().unwrap() {
        let conf = conf.as_str().unwrap();
        assert!(dests.contains(&conf[1..]), "conffile {conf} is not an asset");
    }
    for d in [
        "usr/bin/",
        "usr/share/man/man1/",
        "usr/share/man/man5/",
        "usr/share/bash-completion/completions/ipsla",
        "usr/share/zsh/vendor-completions/_ipsla",
        "usr/share/fish/vendor_completions.d/ipsla.fish",
    ] {
        assert!(dests.contains(d), "nothing installed to {d}");
    }
    // installing starts nothing: the admin enables a unit once the file is edited
    for unit in deb["systemd-units"].as_array().unwrap() {
        assert_eq!(unit["enable"].as_bool(), Some(false), "{unit}");
        assert_eq!(unit["start"].as_bool(), Some(false), "{unit}");
    }
    let postrm = std::fs::read_to_string(repo().join("dist/deb/postrm")).unwrap();
    assert!(postrm.contains("rm -rf /var/lib/private/ipsla /var/lib/ipsla") && postrm.contains("#DEBHELPER#"));
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let joined =
        text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n").replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (i, rest) = l.trim().split_once(' ').unwrap();
            (i.to_string(), rest.trim().to_string())
        })
        .collect()
}

fn json_words(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not an exec-form list: {s}: {e}"))
}

#[test]
fn dockerfile_matches_the_binary_and_the_shipped_configuration() {
    let _machine = crate::common::shared();
    let ins = dockerfile();
    let all = |name: &str| ins.iter().filter(|(i, _)| i == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    let one = |name: &str| -> String {
        let v = all(name);
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        v[0].to_string()
    };
    // two stages: the build on the pinned toolchain, the run on Debian slim
    let from = all("FROM");
    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain.lines().find_map(|l| l.strip_prefix("channel = ")).unwrap().trim_matches('"');
    assert_eq!(from[0], format!("rust:{channel}-slim-bookworm AS build"));
    assert_eq!(from[1..], ["debian:bookworm-slim"]);

    let entry = json_words(&one("ENTRYPOINT"));
    assert_eq!(entry, ["/usr/bin/ipsla"]);
    assert!(all("COPY").contains(&"--from=build /src/target/release/ipsla /usr/bin/ipsla"));
    // CMD runs: its --config is a file the image copies in, and the binary accepts that file
    let cmd = json_words(&one("CMD"));
    let at = cmd.iter().position(|a| a == "--config").unwrap();
    let copied =
        all("COPY").into_iter().find_map(|c| c.strip_suffix(&format!(" {}", cmd[at + 1]))).unwrap().to_string();
    let mut args = cmd.clone();
    args[at + 1] = repo().join(&copied).display().to_string();
    let out = ipsla().args(&args).arg("--check").output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));

    // non-root; the capabilities are those the unit grants, less CAP_NET_ADMIN (routes: docs/install.md)
    let user = one("USER");
    assert!(user != "root" && user != "0", "USER {user}");
    let run = all("RUN").join("\n");
    assert!(run.contains("setcap cap_net_bind_service,cap_net_raw+ep /usr/bin/ipsla"), "{run}");
    assert!(run.contains("install -d -o ipsla -g ipsla -m 0750 /var/lib/ipsla /run/ipsla"), "{run}");
    assert_eq!(all("WORKDIR"), ["/src", "/var/lib/ipsla"]);

    // the ports are the responder's control ports and the agent's HTTP port of the shipped file
    let shipped = std::fs::read_to_string(repo().join("dist/deb/agent.toml")).unwrap();
    assert!(shipped.contains("http = \"127.0.0.1:9167\""));
    assert_eq!(one("EXPOSE"), "1967/udp 1167/udp 9167/tcp");
}

#[test]
fn dockerfile_healthcheck_asks_the_agent_for_healthy() {
    let _machine = crate::common::shared();
    let check = dockerfile().into_iter().find(|(i, _)| i == "HEALTHCHECK").unwrap().1;
    let exec = json_words(check.split_once("CMD ").unwrap().1);
    assert_eq!(exec[..2], ["bash", "-c"]);
    assert!(exec[2].contains("/dev/tcp/127.0.0.1/9167") && exec[2].contains("GET /-/healthy"));
    // the same command against an agent on another port: 0 while healthy, non-zero once it is gone
    let dir = tempfile::tempdir().unwrap();
    let agent = InProcess::start(&AgentToml::new().http(0).store(&dir.path().join("agent.db")));
    let script = exec[2].replace("/9167", &format!("/{}", agent.http()));
    let status = Command::new("bash").arg("-c").arg(&script).status().unwrap();
    assert!(status.success(), "{script}");
    let port = agent.http();
    drop(agent);
    let script = exec[2].replace("/9167", &format!("/{port}"));
    let status = Command::new("bash").arg("-c").arg(&script).stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!status.success(), "healthcheck passed against a stopped agent");
}
