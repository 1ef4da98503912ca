//! `[[group]]` tables: IOS `ip sla group schedule` (the multi-operation scheduler). The operations
//! of a group start evenly spread over the schedule period and then run at the group's frequency
//! (or at a random frequency from a range: the random scheduler).
//!
//! IOS spreads starts at least one second apart and, with more operations than seconds, starts
//! the remainder in the last second. We spread them over the whole period at sub-second steps
//! instead: 10,000 operations over 60 s start 6 ms apart rather than 166 in each second, which is
//! the point of the group scheduler (no synchronised bursts).

use crate::config::{ConfigError, Result, parse_duration};
use crate::ops::{OperationDef, check_recurring, start_time};
use ipsla_core::schedule::{StartTime, group_offsets};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One `[[group]]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct GroupFile {
    pub id: u32,
    /// IOS operation list: "1-10,12,20-29".
    pub operations: String,
    pub schedule_period: String,
    /// "60s", or "range 80-100" / "range 80s-100s" (the random scheduler). Default: the period.
    pub frequency: Option<String>,
    pub life: Option<String>,
    /// now | pending | "after DURATION" | "at HH:MM[:SS]" (default now).
    pub start: Option<String>,
    pub ageout: Option<String>,
    pub recurring: Option<bool>,
}

/// Parses an IOS operation list ("1-10,12").
pub fn parse_list(key: &str, s: &str) -> Result<Vec<u32>> {
    let bad = || ConfigError(format!("{key}: \"{s}\" is not an operation list; expected e.g. \"1-10,12,20-29\""));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().map_err(|_| bad())?, b.trim().parse::<u32>().map_err(|_| bad())?),
            None => {
                let n = part.parse::<u32>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if lo > hi || hi - lo >= 100_000 || out.len() + (hi - lo) as usize >= 100_000 {
            return Err(bad());
        }
        out.extend(lo..=hi);
    }
    let mut sorted = out.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(ConfigError(format!("{key}: \"{s}\" names an operation twice")));
    }
    Ok(out)
}

fn frequency(key: &str, s: &str) -> Result<(Duration, Option<(Duration, Duration)>)> {
    let one = |v: &str| {
        let v = if v.chars().all(|c| c.is_ascii_digit()) { format!("{v}s") } else { v.to_string() };
        parse_duration(key, &v, Duration::from_secs(1), Duration::from_secs(604_800))
    };
    match s.trim().strip_prefix("range") {
        Some(r) => {
            let (a, b) = r.trim().split_once('-').ok_or_else(|| {
                ConfigError(format!("{key}: \"{s}\" is not a range; expected e.g. \"range 80-100\" (seconds)"))
            })?;
            let (lo, hi) = (one(a.trim())?, one(b.trim())?);
            if lo > hi {
                return Err(ConfigError(format!("{key}: the range's low end is above its high end")));
            }
            Ok((lo, Some((lo, hi))))
        }
        None => Ok((one(s)?, None)),
    }
}

/// Applies the groups to the operations they name, in place. A schedule key written on a grouped
/// operation is an error rather than silently overridden.
pub fn apply(groups: &[GroupFile], ops: &mut [OperationDef]) -> Result<()> {
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    let mut group_ids = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let k = |f: &str| format!("group[{i}].{f}");
        if group_ids.contains(&g.id) {
            return Err(ConfigError(format!("{}: {} is already used", k("id"), g.id)));
        }
        group_ids.push(g.id);
        let list = parse_list(&k("operations"), &g.operations)?;
        let period = parse_duration(
            &k("schedule_period"),
            &g.schedule_period,
            Duration::from_secs(1),
            Duration::from_secs(604_800),
        )?;
        let (freq, random) = match &g.frequency {
            Some(f) => frequency(&k("frequency"), f)?,
            None => (period, None),
        };
        let life = match g.life.as_deref() {
            None | Some("forever") => None,
            Some(s) => Some(parse_duration(&k("life"), s, Duration::from_secs(1), Duration::from_secs(2_147_483_647))?),
        };
        let ageout = g
            .ageout
            .as_deref()
            .map(|s| parse_duration(&k("ageout"), s, Duration::ZERO, Duration::from_secs(2_073_600)))
            .transpose()?;
        let recurring = g.recurring.unwrap_or(false);
        if recurring {
            check_recurring(&k("recurring"), life, ageout)?;
        }
        let start = start_time(&k("start"), g.start.as_deref().unwrap_or("now"))?;
        if matches!(start, StartTime::Random(_)) {
            return Err(ConfigError(format!(
                "{}: a group spreads its starts itself; allowed: now, pending, \"after DURATION\", \"at HH:MM[:SS]\"",
                k("start")
            )));
        }
        let offsets = group_offsets(list.len(), period);
        for (op, offset) in list.iter().zip(offsets) {
            if let Some(prev) = seen.insert(*op, g.id) {
                return Err(ConfigError(format!("{}: operation {op} is already in group {prev}", k("operations"))));
            }
            let Some(idx) = ops.iter().position(|d| d.id == *op) else {
                return Err(ConfigError(format!("{}: there is no operation {op}", k("operations"))));
            };
            if let Some(name) = ops[idx].schedule_keys.first() {
                return Err(ConfigError(format!(
                    "operation[{idx}].{name}: operation {op} is scheduled by group {}; set {name} in the group",
                    g.id
                )));
            }
            let d = &mut ops[idx];
            let min = d.spec.min_frequency();
            if random.map_or(freq, |(lo, _)| lo) < min {
                return Err(ConfigError(format!(
                    "{}: {} is shorter than one run of operation {op} ({})",
                    k("frequency"),
                    humantime::format_duration(freq),
                    humantime::format_duration(min)
                )));
            }
            let s = &mut d.schedule;
            s.frequency = freq;
            s.random_frequency = random;
            s.life = life;
            s.ageout = ageout;
            s.recurring = recurring;
            s.start = match start {
                StartTime::Now => StartTime::After(offset),
                StartTime::After(a) => StartTime::After(a + offset),
                StartTime::At(t) => StartTime::At(t + offset),
                other => other,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::AgentFile;

    fn cfg(extra: &str) -> Result<crate::daemon::AgentConfig> {
        let mut text = String::new();
        for id in 1..=20 {
            text += &format!("[[operation]]\nid = {id}\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n");
        }
        AgentFile::parse(&(text + extra))?.validate()
    }

    #[test]
    fn lists_parse_like_ios() {
        assert_eq!(parse_list("k", "1-3,7, 9-10").unwrap(), vec![1, 2, 3, 7, 9, 10]);
        for bad in ["", "3-1", "a", "1,,2", "1-2,2"] {
            let e = parse_list("group[0].operations", bad).unwrap_err().to_string();
            assert!(e.starts_with("group[0].operations:"), "{bad}: {e}");
        }
        assert!(parse_list("k", "1-4000000000").is_err(), "bounded");
    }

    #[test]
    fn twenty_operations_over_60s_start_3s_apart() {
        // the IOS example: 20 operations over a 60 s period start 3 s apart
        let c = cfg("[[group]]\nid = 1\noperations = \"1-20\"\nschedule_period = \"60s\"\n").unwrap();
        let starts: Vec<_> = c.operations.iter().map(|o| o.schedule.start).collect();
        assert_eq!(starts[0], StartTime::After(Duration::ZERO));
        assert_eq!(starts[1], StartTime::After(Duration::from_secs(3)));
        assert_eq!(starts[19], StartTime::After(Duration::from_secs(57)));
        assert!(c.operations.iter().all(|o| o.schedule.frequency == Duration::from_secs(60)), "frequency = period");
    }

    #[test]
    fn random_frequency_range_and_start_after() {
        let c = cfg("[[group]]\nid = 1\noperations = \"1-10\"\nschedule_period = \"20s\"\nfrequency = \"range 80-100\"\nstart = \"after 5s\"\nlife = \"1h\"\n").unwrap();
        let o = &c.operations[4];
        assert_eq!(o.schedule.random_frequency, Some((Duration::from_secs(80), Duration::from_secs(100))));
        assert_eq!(o.schedule.start, StartTime::After(Duration::from_secs(5 + 8)));
        assert_eq!(o.schedule.life, Some(Duration::from_secs(3600)));
        assert_eq!(c.operations[10].schedule.start, StartTime::Now, "not in the group");
    }

    #[test]
    fn errors_name_the_key() {
        let g = |s: &str| cfg(s).unwrap_err().to_string();
        let e = g("[[group]]\nid = 1\noperations = \"1-30\"\nschedule_period = \"60s\"\n");
        assert!(e.contains("group[0].operations") && e.contains("no operation 21"), "{e}");
        let e = g("[[group]]\nid = 1\noperations = \"1-5\"\nschedule_period = \"60s\"\nfrequency = \"range 9-3\"\n");
        assert!(e.contains("group[0].frequency"), "{e}");
        let e = g(
            "[[group]]\nid = 1\noperations = \"1-5\"\nschedule_period = \"60s\"\n[[group]]\nid = 2\noperations = \"5\"\nschedule_period = \"60s\"\n",
        );
        assert!(e.contains("group[1].operations") && e.contains("already in group 1"), "{e}");
        let e = g("[[group]]\nid = 1\noperations = \"1\"\nschedule_period = \"60s\"\nstart = \"random 5s\"\n");
        assert!(e.contains("group[0].start"), "{e}");
        let e = g("[[group]]\nid = 1\noperations = \"1\"\nschedule_period = \"1x\"\n");
        assert!(e.contains("group[0].schedule_period"), "{e}");
        let mut text =
            String::from("[[operation]]\nid = 1\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\nfrequency = \"10s\"\n");
        text += "[[group]]\nid = 1\noperations = \"1\"\nschedule_period = \"60s\"\n";
        let e = AgentFile::parse(&text).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("operation[0].frequency") && e.contains("group 1"), "{e}");
    }
}
