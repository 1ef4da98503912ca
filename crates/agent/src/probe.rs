//! `/probe`: one run of an operation described by the query string, answered with that run's
//! metrics, as blackbox_exporter's `/probe` is, so that Prometheus can drive the agent as a
//! multi-target exporter (`__param_target` relabelling).
//!
//! The parameters are the `[[operation]]` keys (`type`, `target`, `port`, `codec`, ...) and go
//! through the same validation as the configuration file ([`crate::ops::common::validate`]), so
//! an error names the parameter. The answer is the per-operation families of `/metrics` for this
//! one run (operation number 1), plus blackbox's `probe_success` and `probe_duration_seconds`.

use crate::metrics::Metrics;
use crate::ops::fields::Ty;
use crate::ops::{Namer, all_keys, find};
use crate::runner::{self, RunContext, RunError};
use ipsla_core::ops::ReturnCode;
use ipsla_net::probe::Hooks;
use std::fmt::Write as _;
use std::time::Instant;

/// Why a `/probe` request has no answer.
#[derive(Debug, PartialEq)]
pub(crate) enum ProbeError {
    /// The parameters are not an operation (HTTP 400): the message names the parameter.
    Invalid(String),
    /// The agent is stopping (HTTP 503).
    Stopping,
}

/// The parameters as an `[[operation]]` table, each value typed as its key wants (a repeated
/// parameter is a list). Unknown parameters go in as text, for validation to name them.
fn table(params: &[(String, String)]) -> Result<toml::Table, ProbeError> {
    let kind = params.iter().find(|(k, _)| k == "type").and_then(|(_, v)| find(v));
    let keys = kind.map(all_keys).unwrap_or_default();
    let mut t = toml::Table::new();
    for (name, value) in params {
        let ty = keys.iter().find(|k| k.name == name).map(|k| &k.ty);
        let v = match ty {
            Some(Ty::Bool) => match value.as_str() {
                "true" | "1" => toml::Value::Boolean(true),
                "false" | "0" => toml::Value::Boolean(false),
                _ => return Err(ProbeError::Invalid(format!("{name}: \"{value}\" is not true or false"))),
            },
            Some(Ty::Int) => toml::Value::Integer(
                value.parse().map_err(|_| ProbeError::Invalid(format!("{name}: \"{value}\" is not an integer")))?,
            ),
            Some(Ty::List) => {
                let mut list = match t.remove(name) {
                    Some(toml::Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                list.push(toml::Value::String(value.clone()));
                toml::Value::Array(list)
            }
            _ => toml::Value::String(value.clone()),
        };
        if t.insert(name.clone(), v).is_some() && !matches!(ty, Some(Ty::List)) {
            return Err(ProbeError::Invalid(format!("{name}: given twice; give it once")));
        }
    }
    Ok(t)
}

/// Validates `params`, runs the operation once on this thread (it blocks), and writes the
/// answer in the classic text exposition format.
pub(crate) fn run(
    params: &[(String, String)],
    rt: &tokio::runtime::Handle,
    stopping: &(dyn Fn() -> bool + Sync),
) -> Result<String, ProbeError> {
    let t = table(params)?;
    let def = crate::ops::common::validate(&t, Namer::Query, 1).map_err(|e| ProbeError::Invalid(e.0))?;
    let began = Instant::now();
    let hooks = Hooks { events: None, cancelled: Some(stopping) };
    let outcome = runner::run(&def.spec, &RunContext { sequence: rand::random(), rt, hooks });
    let took = began.elapsed().as_secs_f64();
    let m = Metrics::for_probe();
    m.declare(&def);
    let (success, note) = match &outcome {
        Ok(out) => {
            m.observe(&def, &out.result, &out.detail);
            (out.result.return_code == ReturnCode::Ok, out.result.cause.as_ref().map(|c| c.to_string()))
        }
        Err(RunError::Cancelled) => return Err(ProbeError::Stopping),
        Err(e) => (false, Some(format!("the run could not start: {}", ipsla_core::error::Chain(e)))),
    };
    let mut text = m.encode_text();
    if let Some(why) = note {
        // a comment line: why there is no value, for whoever reads the answer
        let _ = writeln!(text, "# {}", why.replace('\n', " "));
    }
    let _ = write!(
        text,
        "# HELP probe_success 1 when the run returned OK (ipsla_operation_return_code says what it returned)\n\
         # TYPE probe_success gauge\nprobe_success {}\n\
         # HELP probe_duration_seconds How long the run took, control phase included\n\
         # TYPE probe_duration_seconds gauge\nprobe_duration_seconds {took}\n",
        u8::from(success)
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn invalid(pairs: &[(&str, &str)]) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        match run(&p(pairs), rt.handle(), &|| false) {
            Err(ProbeError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(
            invalid(&[("type", "udp-jitter"), ("target", "127.0.0.1"), ("port", "x")]),
            "port: \"x\" is not an integer"
        );
        assert_eq!(
            invalid(&[("type", "udp-echo"), ("target", "127.0.0.1"), ("port", "1"), ("port", "2")]),
            "port: given twice; give it once"
        );
        assert!(
            invalid(&[("type", "nope"), ("target", "127.0.0.1")])
                .starts_with("type: \"nope\" is not an operation; allowed: ")
        );
        assert!(invalid(&[("target", "127.0.0.1")]).starts_with("type: missing; allowed: "));
        let e = invalid(&[("type", "udp-echo"), ("target", "127.0.0.1"), ("packets", "5")]);
        assert!(e.starts_with("packets: "), "{e}");
    }
}
