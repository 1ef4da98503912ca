//! The keys of an operation, declared once ([`Key`]: name, value type, help, command-line flag)
//! and read from one `[[operation]]` table ([`Fields`]) with errors that name the key as the
//! user wrote it: `operation[2].packets` in a file, `--packets` on the command line.
//!
//! The same declarations give `ipsla probe` its flags, so a key and its flag cannot drift.

use crate::config::{ConfigError, Result, parse_duration};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// true / false (a flag on the command line).
    Bool,
    /// An integer.
    Int,
    /// Free text.
    Text,
    /// A duration: "20ms", "5s", "1h".
    Duration,
    /// A file.
    Path,
    /// An IP address.
    Addr,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A list of words (a repeatable flag).
    List,
    /// A list of integers.
    IntList,
    /// Sub-tables (`[[operation.reaction]]`): configuration files only.
    Tables,
}

/// How a key appears on the command line of `ipsla probe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `--name-with-dashes`.
    Same,
    /// Another flag name (`stamp_key_file` is `--auth-key-file`).
    Named(&'static str),
    /// A boolean key that defaults to true, turned off by this flag (`--no-kernel-timestamps`).
    Negated(&'static str),
    /// Configuration files only (schedules, reactions, history).
    ConfigOnly,
}

/// One key of an `[[operation]]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The TOML key.
    pub name: &'static str,
    /// Its value type.
    pub ty: Ty,
    /// One line of help (the flag's help, the documentation of the key), defaults included.
    pub help: &'static str,
    /// Its command-line form.
    pub flag: Flag,
    /// Other flag names (`--num-packets` for `--packets`).
    pub aliases: &'static [&'static str],
    /// A flag that sets this key to a fixed value (`--no-control` = `control = "none"`).
    pub shortcut: Option<(&'static str, &'static str)>,
}

impl Key {
    /// A key whose flag is its name with dashes.
    pub const fn new(name: &'static str, ty: Ty, help: &'static str) -> Key {
        Key { name, ty, help, flag: Flag::Same, aliases: &[], shortcut: None }
    }
    /// With another command-line form.
    pub const fn flag(self, flag: Flag) -> Key {
        Key { flag, ..self }
    }
    /// Configuration files only.
    pub const fn config_only(self) -> Key {
        self.flag(Flag::ConfigOnly)
    }
    /// With other flag names.
    pub const fn aliases(self, aliases: &'static [&'static str]) -> Key {
        Key { aliases, ..self }
    }
    /// With a flag that sets a fixed value.
    pub const fn shortcut(self, flag: &'static str, value: &'static str) -> Key {
        Key { shortcut: Some((flag, value)), ..self }
    }
    /// The command-line flag (without `--`), `None` for configuration-only keys.
    pub fn flag_name(&self) -> Option<String> {
        match self.flag {
            Flag::Same => Some(self.name.replace('_', "-")),
            Flag::Named(n) | Flag::Negated(n) => Some(n.to_string()),
            Flag::ConfigOnly => None,
        }
    }
}

/// How errors name a key.
#[derive(Clone, Copy)]
pub enum Namer<'a> {
    /// `PREFIX.key` (`operation[2].packets`).
    Config(&'a str),
    /// The command-line flag of the key among these keys (`--packets`).
    Cli(&'a [&'a Key]),
    /// A query-string parameter of the agent's `/probe` (`packets`).
    Query,
}

impl Namer<'_> {
    /// The key alone (`packets`, `--packets`), for mentions inside a message about another key.
    pub fn short(&self, key: &str) -> String {
        match self {
            Namer::Config(_) | Namer::Query => key.to_string(),
            Namer::Cli(_) => self.name(key),
        }
    }

    /// The key and the value as the user wrote them (`operation[2].timeout = 5000`,
    /// `--timeout 5000`).
    pub fn assignment(&self, key: &str, value: impl std::fmt::Display) -> String {
        match self {
            Namer::Config(_) => format!("{} = {value}", self.name(key)),
            Namer::Cli(_) => format!("{} {value}", self.name(key)),
            Namer::Query => format!("{key}={value}"),
        }
    }

    /// The key as the user wrote it.
    pub fn name(&self, key: &str) -> String {
        match self {
            Namer::Config(prefix) => format!("{prefix}.{key}"),
            Namer::Cli(keys) => match keys.iter().find(|k| k.name == key).and_then(|k| k.flag_name()) {
                Some(f) => format!("--{f}"),
                None => key.to_string(),
            },
            Namer::Query => key.to_string(),
        }
    }
}

/// One operation's table, read key by key.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    table: &'a toml::Table,
    namer: Namer<'a>,
}

fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn type_error(key: String, v: &toml::Value, expected: &str) -> ConfigError {
    ConfigError(format!("{key}: {v} is not {expected}"))
}

impl<'a> Fields<'a> {
    /// Reads `table`, naming keys with `namer`.
    pub fn new(table: &'a toml::Table, namer: Namer<'a>) -> Fields<'a> {
        Fields { table, namer }
    }

    /// The key as the user wrote it, for error messages.
    pub fn key(&self, name: &str) -> String {
        self.namer.name(name)
    }

    /// The key alone, for mentions inside a message about another key.
    pub fn short(&self, name: &str) -> String {
        self.namer.short(name)
    }

    /// The error `KEY: what`.
    pub fn error(&self, name: &str, what: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {what}", self.key(name)))
    }

    /// True when the key is set.
    pub fn is_set(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    /// The first of `names` that is set.
    pub fn first_set<'n>(&self, names: &[&'n str]) -> Option<&'n str> {
        names.iter().find(|n| self.is_set(n)).copied()
    }

    /// An integer key, checked against the type's range.
    pub fn int<T: TryFrom<i64>>(&self, name: &str) -> Result<Option<T>> {
        match self.table.get(name) {
            None => Ok(None),
            Some(v @ toml::Value::Integer(i)) => T::try_from(*i).map(Some).map_err(|_| {
                let (lo, hi) = int_bounds::<T>();
                ConfigError(format!("{}: {v} is out of range; allowed {lo} to {hi}", self.key(name)))
            }),
            Some(v) => Err(type_error(self.key(name), v, "an integer")),
        }
    }

    /// An integer key with a default, within `[min, max]`.
    pub fn range<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display + Copy,
    {
        crate::config::check_range(&self.key(name), self.int(name)?.unwrap_or(default), min, max)
    }

    /// A boolean key.
    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.table.get(name) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(self.key(name), v, "true or false")),
        }
    }

    /// A text key.
    pub fn text(&self, name: &str) -> Result<Option<&'a str>> {
        match self.table.get(name) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(type_error(self.key(name), v, "a string")),
        }
    }

    /// A list of strings (a single string counts as a list of one).
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        match self.table.get(name) {
            None => Ok(Vec::new()),
            Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| type_error(self.key(name), v, "a string")))
                .collect(),
            Some(v) => Err(type_error(self.key(name), v, "a list of strings")),
        }
    }

    /// A file name.
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>> {
        Ok(self.text(name)?.map(PathBuf::from))
    }

    /// An IP address.
    pub fn addr(&self, name: &str) -> Result<Option<IpAddr>> {
        self.text(name)?
            .map(|s| s.parse().map_err(|_| self.error(name, format!("\"{s}\" is not an IP address"))))
            .transpose()
    }

    /// A duration with a default, within `[min, max]`: text with its unit (`"20ms"`, `"5s"`).
    pub fn duration(&self, name: &str, default: Duration, min: Duration, max: Duration) -> Result<Duration> {
        match self.duration_text(name)? {
            Some(s) => parse_duration(&self.key(name), s, min, max),
            None => Ok(default),
        }
    }

    /// The text of a duration key. A bare number is refused with how to write it: its unit is
    /// not guessed (IOS counts timeout, threshold and interval in ms, most others in seconds).
    pub fn duration_text(&self, name: &str) -> Result<Option<&'a str>> {
        let bare = |n: &dyn std::fmt::Display| {
            let unit = if matches!(name, "timeout" | "threshold" | "interval") { "ms" } else { "s" };
            ConfigError(format!(
                "{}: write a duration with its unit, e.g. \"{n}{unit}\"",
                self.namer.assignment(name, n)
            ))
        };
        match self.table.get(name) {
            Some(toml::Value::Integer(n)) => Err(bare(n)),
            Some(toml::Value::String(s)) if is_number(s) => Err(bare(s)),
            _ => self.text(name),
        }
    }

    /// IOS `frequency`: a bare integer is seconds, its unit in IOS (`frequency = 10`); text is a
    /// duration with its unit.
    pub fn seconds_or_duration(&self, name: &str, default: Duration, min: Duration, max: Duration) -> Result<Duration> {
        let seconds = match self.table.get(name) {
            Some(toml::Value::Integer(n)) => Some(n.to_string()),
            Some(toml::Value::String(s)) if is_number(s) => Some(s.clone()),
            _ => None,
        };
        match seconds {
            Some(n) if !n.starts_with('-') => parse_duration(&self.key(name), &format!("{n}s"), min, max),
            Some(n) => Err(self
                .error(name, format!("{n} is out of range; allowed {} to {} seconds", min.as_secs(), max.as_secs()))),
            None => self.duration(name, default, min, max),
        }
    }

    /// One of `allowed` (word, value), or `default` when unset.
    pub fn choose<T: Copy>(&self, name: &str, default: T, allowed: &[(&str, T)]) -> Result<T> {
        let Some(v) = self.text(name)? else { return Ok(default) };
        allowed.iter().find(|(n, _)| *n == v).map(|(_, t)| *t).ok_or_else(|| {
            self.error(
                name,
                format!(
                    "\"{v}\" is not allowed; allowed: {}",
                    allowed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// A key read with serde (sub-tables, lists of numbers).
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.table.get(name).map(|v| v.clone().try_into().map_err(|e| self.error(name, e))).transpose()
    }
}

fn int_bounds<T: TryFrom<i64>>() -> (i64, i64) {
    // the narrowest of the integer types the keys use that accepts both ends
    let fits = |v: i64| T::try_from(v).is_ok();
    let lo = [i64::MIN, i32::MIN.into(), i16::MIN.into(), 0].into_iter().find(|v| fits(*v)).unwrap_or(0);
    let hi = [i64::MAX, u32::MAX.into(), i32::MAX.into(), u16::MAX.into(), i16::MAX.into(), u8::MAX.into()]
        .into_iter()
        .find(|v| fits(*v))
        .unwrap_or(0);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_as_written() {
        let t: toml::Table = toml::from_str("packets = -1\nport = 70000\ninterval = 5\nflag = \"yes\"").unwrap();
        let f = Fields::new(&t, Namer::Config("operation[3]"));
        assert_eq!(
            f.int::<u32>("packets").unwrap_err().to_string(),
            "operation[3].packets: -1 is out of range; allowed 0 to 4294967295"
        );
        assert_eq!(
            f.int::<u16>("port").unwrap_err().to_string(),
            "operation[3].port: 70000 is out of range; allowed 0 to 65535"
        );
        assert_eq!(
            f.duration("interval", Duration::ZERO, Duration::ZERO, Duration::MAX).unwrap_err().to_string(),
            "operation[3].interval = 5: write a duration with its unit, e.g. \"5ms\""
        );
        assert_eq!(f.bool("flag").unwrap_err().to_string(), "operation[3].flag: \"yes\" is not true or false");
        let keys = [&Key::new("stamp_key_file", Ty::Path, "").flag(Flag::Named("auth-key-file"))];
        assert_eq!(Namer::Cli(&keys).name("stamp_key_file"), "--auth-key-file");
        assert_eq!(Namer::Cli(&keys).name("other"), "other");
    }
}
