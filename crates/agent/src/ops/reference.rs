//! The reference of every operation key, generated from the registry: docs/operation-keys.md is
//! this text (a test keeps it current), and the same source serves `--help` and the manual.

use super::{Flag, Key, REGISTRY, Ty, common::COMMON};
use std::fmt::Write as _;

/// How a value of `ty` is written in the file.
pub fn type_words(ty: Ty) -> String {
    match ty {
        Ty::Bool => "`true` / `false`".into(),
        Ty::Int => "integer".into(),
        Ty::Text => "text".into(),
        Ty::Duration => "duration (`\"20ms\"`, `\"5s\"`, `\"1h\"`)".into(),
        Ty::Path => "file path".into(),
        Ty::Addr => "IP address".into(),
        Ty::Choice(words) => words.iter().map(|w| format!("`\"{w}\"`")).collect::<Vec<_>>().join(", "),
        Ty::List => "list of words".into(),
        Ty::IntList => "list of integers".into(),
        Ty::Tables => "tables (`[[operation.reaction]]`)".into(),
    }
}

/// The key's form on `ipsla probe`'s command line.
pub fn flag_words(k: &Key) -> String {
    let mut v: Vec<String> = match k.flag {
        Flag::ConfigOnly => vec!["file only".into()],
        Flag::Negated(n) => vec![format!("`--{n}` (sets it to false)")],
        _ => k.flag_name().map(|f| format!("`--{f}`")).into_iter().collect(),
    };
    v.extend(k.aliases.iter().map(|a| format!("`--{a}`")));
    if let Some((flag, value)) = k.shortcut {
        v.push(format!("`--{flag}` (= `\"{value}\"`)"));
    }
    v.join(", ")
}

fn table(t: &mut String, keys: &[&Key]) {
    t.push_str("| key | value | `ipsla probe` | meaning |\n|---|---|---|---|\n");
    for k in keys {
        let help = k.help.replace('|', "\\|");
        let _ = writeln!(t, "| `{}` | {} | {} | {help} |", k.name, type_words(k.ty), flag_words(k));
    }
}

/// docs/operation-keys.md.
pub fn markdown() -> String {
    let mut t = String::from(
        "# Operation keys\n\n\
         <!-- Generated from the operation registry (crates/agent/src/ops/). Do not edit: run\n\
         `IPSLA_BLESS=1 cargo test -p ipsla-agent the_key_reference_is_current` after changing a key. -->\n\n\
         Every key an `[[operation]]` table of the agent's file takes, by operation type, and its\n\
         flag on `ipsla probe TYPE`. A key that a type does not take is refused with the types that\n\
         do take it; an unknown key is refused with the nearest known one.\n\n",
    );
    let _ =
        writeln!(t, "Types: {}.\n", REGISTRY.iter().map(|k| format!("`{}`", k.name())).collect::<Vec<_>>().join(", "));
    t.push_str("## Every type\n\n");
    let common: Vec<&Key> = COMMON.iter().collect();
    table(&mut t, &common);
    t.push_str("\n`port` is each type's own key, with its own default (the ICMP types have none).\n");
    for kind in REGISTRY {
        let _ = write!(t, "\n## {}\n\n{}.", kind.name(), kind.about());
        match kind.default_port() {
            Some(p) => {
                let _ = writeln!(t, " Default port {p}.\n");
            }
            None => t.push_str(" No port.\n\n"),
        }
        let own: Vec<&Key> = kind.keys().iter().flat_map(|g| g.iter()).collect();
        if own.is_empty() {
            t.push_str("No keys beyond those of every type.\n");
        } else {
            table(&mut t, &own);
        }
    }
    t
}
