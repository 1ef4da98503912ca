//! A measurement mesh: one file shared by every agent lists the sites (name, address, tags) and
//! the tests between them; the agent of site S runs each test from S to every other site, as
//! ordinary operations, and answers the others with its responder (docs/mesh.md).
//!
//! The expansion is a pure function of the file and the site's name. An operation's number is
//! derived from (test name, destination site name) only ([`operation_id`]), so a reload after an
//! edit that adds or removes a site, or another test, keeps every other operation's number, and
//! with it its schedule, counters and stored history.
//!
//! ```toml
//! [[site]]
//! name = "paris"
//! address = "192.0.2.10"
//!
//! [[site]]
//! name = "berlin"
//! address = "198.51.100.7"
//!
//! [[test]]
//! name = "voice"
//! type = "udp-jitter"
//! codec = "g711alaw"
//! frequency = "30s"
//! ```

pub mod peers;

use crate::config::{ConfigError, ResponderFile, Result};
use crate::ops::{Namer, OperationDef};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// `[mesh]` of the agent's file (or `--mesh FILE --site NAME`).
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// The mesh file (TOML).
    pub file: Option<PathBuf>,
    /// This agent's site: one of the file's `[[site]]` names.
    pub site: Option<String>,
    /// An `http[s]://` URL the file is kept up to date from: fetched every `poll`, and when it
    /// differs from `file` and is a valid mesh, written to `file` and reloaded.
    pub url: Option<String>,
    /// How often `url` is fetched (default 5m).
    pub poll: Option<String>,
}

/// Where the mesh file is kept up to date from (`[mesh] url`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshSource {
    /// The URL, as written.
    pub url: String,
    /// Between two fetches.
    pub poll: std::time::Duration,
    /// The local copy the agent runs from.
    pub file: PathBuf,
    /// This agent's site (a fetched file must have it).
    pub site: String,
    target: HttpTarget,
}

impl MeshSource {
    /// Fetches the URL: the body of a 200, as text, or why there is none.
    pub(crate) async fn fetch(&self) -> std::result::Result<String, String> {
        self.target.get(&self.target.path, FETCH_TIMEOUT, crate::config::MAX_CONFIG_LEN as usize).await
    }
}

/// Where an HTTP GET goes: a parsed `http[s]://` URL and, for https, its TLS client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpTarget {
    host: String,
    port: u16,
    authority: String,
    /// The URL's path (and query).
    pub(crate) path: String,
    tls: Option<crate::tls::Tls>,
}

impl HttpTarget {
    /// Parses `url`; `key` names it in errors.
    fn parse(key: &str, url: &str) -> Result<HttpTarget> {
        let u = crate::alert::parse_url(key, url)?;
        let tls = u.https.then(|| crate::tls::Tls::new(key, &u.host, None)).transpose()?;
        Ok(HttpTarget { host: u.host, port: u.port, authority: u.authority, path: u.path, tls })
    }

    /// `GET path`: the body of a 200 (at most `limit` bytes of UTF-8), or why there is none.
    pub(crate) async fn get(
        &self,
        path: &str,
        timeout: std::time::Duration,
        limit: usize,
    ) -> std::result::Result<String, String> {
        let at = format!("{}:{}", self.host, self.port);
        let get = async {
            let tcp = tokio::net::TcpStream::connect(&at).await.map_err(|e| format!("connecting to {at}: {e}"))?;
            match &self.tls {
                Some(tls) => {
                    let s = tls.connect(tcp).await.map_err(|e| format!("TLS with {at}: {e}"))?;
                    self.get_over(s, path, limit).await
                }
                None => self.get_over(tcp, path, limit).await,
            }
        };
        tokio::time::timeout(timeout, get)
            .await
            .map_err(|_| format!("no answer from {at} within {}", humantime::format_duration(timeout)))?
    }

    async fn get_over<S>(&self, stream: S, path: &str, limit: usize) -> std::result::Result<String, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use http_body_util::BodyExt;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::USER_AGENT, concat!("ipsla/", env!("CARGO_PKG_VERSION")))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let got = async {
            let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
            if resp.status() != hyper::StatusCode::OK {
                return Err(format!("HTTP {}", resp.status()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| format!("reading the body (at most {limit} bytes): {e}"))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8 text".to_string())
        }
        .await;
        driver.abort();
        got
    }
}

/// Longest wait for one fetch of `[mesh] url`.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The mesh file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    #[serde(default)]
    site: Vec<SiteFile>,
    /// Each table: `name`, then `[[operation]]` keys but `id` and `target`.
    #[serde(default)]
    test: Vec<toml::Table>,
    /// How every site's responder answers (`[responder]` keys; `listen` defaults to the site's
    /// address).
    responder: Option<ResponderFile>,
    /// The port every site's agent serves HTTP on, at the site's address (a site's `http` wins).
    http_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    name: String,
    address: String,
    #[serde(default)]
    tags: Vec<String>,
    /// `http[s]://HOST:PORT` of the site's agent (its JSON API, for the others' grids).
    http: Option<String>,
}

/// A site's agent, as the others reach it for the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteAgent {
    /// The URL as written (or derived from `http_port`), without a trailing `/`: the grid links
    /// to `{url}/operations/{id}`.
    pub url: String,
    pub(crate) target: HttpTarget,
}

/// One site of the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Its name (`src` / `dst` labels).
    pub name: String,
    /// Where its responder answers.
    pub address: IpAddr,
    /// Free words.
    pub tags: Vec<String>,
    /// Its agent's HTTP address (`http`, or the mesh's `http_port` at `address`), when known.
    pub http: Option<SiteAgent>,
}

/// What a mesh operation measures: test `test` from site `src` to site `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPair {
    /// The test's name.
    pub test: String,
    /// The site the agent runs at.
    pub src: String,
    /// The site measured.
    pub dst: String,
}

impl From<&MeshPair> for crate::api::MeshLabels {
    fn from(p: &MeshPair) -> Self {
        crate::api::MeshLabels { test: p.test.clone(), src: p.src.clone(), dst: p.dst.clone() }
    }
}

/// The mesh as one agent runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    /// The file, as named in messages.
    pub file: String,
    /// This agent's site.
    pub site: String,
    /// Every site, in the file's order.
    pub sites: Vec<Site>,
    /// Every test's name, in the file's order.
    pub tests: Vec<String>,
    /// The operations from this site to the others (`mesh` set on each).
    pub operations: Vec<OperationDef>,
    /// The responder this site runs for the others.
    pub responder: ResponderFile,
    /// Where the file is kept up to date from, when `[mesh] url` is set.
    pub source: Option<MeshSource>,
}

/// First number of the mesh's operations: an agent's own `[[operation]]`s stay below it.
pub const FIRST_ID: u32 = 1_000_000_000;

/// The operation number of test `test` towards site `dst`: FNV-1a (32 bits) of the two names,
/// folded into `FIRST_ID .. 2 × FIRST_ID`. It depends on nothing else, so it survives any edit
/// of the file but renaming the test or the site.
pub fn operation_id(test: &str, dst: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in test.bytes().chain([0]).chain(dst.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    FIRST_ID + h % FIRST_ID
}

/// A name usable in a label and a URL: letters, digits, `-`, `_`, `.`.
fn check_name(key: &str, name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ConfigError(format!("{key}: \"{name}\" is not a name; use letters, digits, '-', '_' and '.'")));
    }
    Ok(())
}

impl MeshSection {
    /// Reads the mesh file and expands it for this site. `key` names where the section came from
    /// in messages (`mesh`).
    pub fn load(&self, key: &str) -> Result<Mesh> {
        let file = self.file.as_ref().ok_or_else(|| {
            ConfigError(format!("{key}.file: missing; name the mesh file ([mesh] file = \"...\" or --mesh FILE)"))
        })?;
        let text = crate::config::read_text(&format!("{key}.file"), file, crate::config::MAX_CONFIG_LEN)?;
        let name = file.display().to_string();
        let site = self.site.as_deref().ok_or_else(|| {
            ConfigError(format!(
                "{key}.site: missing; name this agent's site of {name} ([mesh] site = \"...\" or --site NAME)"
            ))
        })?;
        let source = match &self.url {
            Some(url) => {
                let target = HttpTarget::parse(&format!("{key}.url"), url)?;
                let poll = crate::config::parse_duration(
                    &format!("{key}.poll"),
                    self.poll.as_deref().unwrap_or("5m"),
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(86_400),
                )?;
                Some(MeshSource { url: url.clone(), poll, file: file.clone(), site: site.to_string(), target })
            }
            None if self.poll.is_some() => {
                return Err(ConfigError(format!("{key}.poll: only with {key}.url (the URL to fetch the file from)")));
            }
            None => None,
        };
        Ok(Mesh { source, ..expand(&name, &text, site, key)? })
    }
}

/// Expands the mesh file `text` (named `file` in messages) for site `site`.
pub fn expand(file: &str, text: &str, site: &str, key: &str) -> Result<Mesh> {
    let m: MeshFile = toml::from_str(text).map_err(|e| ConfigError(format!("{file}: {}", e.to_string().trim_end())))?;
    let mut sites: Vec<Site> = Vec::new();
    for (i, s) in m.site.iter().enumerate() {
        let k = format!("{file}: site[{i}]");
        check_name(&format!("{k}.name"), &s.name)?;
        if let Some(j) = sites.iter().position(|x| x.name == s.name) {
            return Err(ConfigError(format!("{k}.name: \"{}\" is already the name of site[{j}]", s.name)));
        }
        let address: IpAddr = s.address.parse().map_err(|_| {
            ConfigError(format!(
                "{k}.address: \"{}\" is not an IP address (the site's responder listens on it)",
                s.address
            ))
        })?;
        if let Some(j) = sites.iter().position(|x| x.address == address) {
            return Err(ConfigError(format!("{k}.address: {address} is already the address of site[{j}]")));
        }
        let url = match (&s.http, m.http_port) {
            (Some(url), _) => Some(url.trim_end_matches('/').to_string()),
            (None, Some(0)) => {
                return Err(ConfigError(format!("{file}: http_port: 0 is out of range; allowed 1 to 65535")));
            }
            (None, Some(port)) => Some(format!("http://{}", std::net::SocketAddr::new(address, port))),
            (None, None) => None,
        };
        let http = match url {
            Some(url) => {
                let target = HttpTarget::parse(&format!("{k}.http"), &url)?;
                if target.path != "/" {
                    return Err(ConfigError(format!(
                        "{k}.http: \"{url}\" has a path; give the agent's address only, e.g. \"http://{}\"",
                        std::net::SocketAddr::new(address, 9167)
                    )));
                }
                Some(SiteAgent { url, target })
            }
            None => None,
        };
        sites.push(Site { name: s.name.clone(), address, tags: s.tags.clone(), http });
    }
    let Some(me) = sites.iter().find(|s| s.name == site) else {
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        return Err(ConfigError(format!(
            "{key}.site: \"{site}\" is not a site of {file}; its sites: {}",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    };
    let responder = ResponderFile { listen: Some(vec![me.address]), ..ResponderFile::default() };
    let responder = match m.responder.clone() {
        Some(r) => ResponderFile { listen: r.listen.clone().or(responder.listen), ..r },
        None => responder,
    };
    responder.options().map_err(|e| ConfigError(format!("{file}: responder.{e}")))?;
    let control_port = responder.v1_port.unwrap_or(ipsla_wire::cisco::CONTROL_V1_PORT);
    let mut tests: Vec<String> = Vec::new();
    let mut operations: Vec<OperationDef> = Vec::new();
    for (i, t) in m.test.iter().enumerate() {
        let k = format!("{file}: test[{i}]");
        let name = match t.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => return Err(ConfigError(format!("{k}.name: {v} is not text"))),
            None => return Err(ConfigError(format!("{k}.name: missing; name the test (it labels its operations)"))),
        };
        check_name(&format!("{k}.name"), &name)?;
        if let Some(j) = tests.iter().position(|x| *x == name) {
            return Err(ConfigError(format!("{k}.name: \"{name}\" is already the name of test[{j}]")));
        }
        for set in ["id", "target"] {
            if t.contains_key(set) {
                return Err(ConfigError(format!(
                    "{k}.{set}: the mesh sets it (from the test and the destination site); remove it"
                )));
            }
        }
        let takes_control = t
            .get("type")
            .and_then(toml::Value::as_str)
            .and_then(crate::ops::find)
            .is_some_and(|kind| crate::ops::all_keys(kind).iter().any(|key| key.name == "control_port"));
        for dst in sites.iter().filter(|s| s.name != me.name) {
            let id = operation_id(&name, &dst.name);
            let mut table = t.clone();
            table.remove("name");
            table.insert("id".into(), toml::Value::Integer(i64::from(id)));
            table.insert("target".into(), toml::Value::String(dst.address.to_string()));
            if !table.contains_key("tag") {
                table.insert("tag".into(), toml::Value::String(name.clone()));
            }
            if takes_control && !table.contains_key("control_port") {
                table.insert("control_port".into(), toml::Value::Integer(i64::from(control_port)));
            }
            let mut def = crate::ops::common::validate(&table, Namer::Config(&k), id)?;
            if let Some(other) = operations.iter().find(|o| o.id == id) {
                let p = other.mesh.as_ref().map(|p| (p.test.as_str(), p.dst.as_str())).unwrap_or_default();
                return Err(ConfigError(format!(
                    "{k}.name: test \"{name}\" to {} and test \"{}\" to {} have the same operation number {id}; rename one of the tests",
                    dst.name, p.0, p.1
                )));
            }
            def.mesh = Some(MeshPair { test: name.clone(), src: me.name.clone(), dst: dst.name.clone() });
            operations.push(def);
        }
        tests.push(name);
    }
    Ok(Mesh { file: file.to_string(), site: me.name.clone(), sites, tests, operations, responder, source: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[responder]
v1_port = 2967

[[site]]
name = "a"
address = "127.0.0.2"
[[site]]
name = "b"
address = "127.0.0.3"
tags = ["eu"]
[[site]]
name = "c"
address = "127.0.0.4"

[[test]]
name = "echo"
type = "udp-echo"
frequency = "5s"

[[test]]
name = "ping"
type = "icmp-echo"
tag = "own tag"
"#;

    #[test]
    fn each_site_runs_every_test_to_every_other_site() {
        let m = expand("mesh.toml", FILE, "b", "mesh").unwrap();
        let pairs: Vec<(u32, &str, &str, &str, String, &str)> = m
            .operations
            .iter()
            .map(|o| {
                let p = o.mesh.as_ref().unwrap();
                (o.id, p.test.as_str(), p.src.as_str(), p.dst.as_str(), o.spec.target_label(), o.tag.as_str())
            })
            .collect();
        assert_eq!(
            pairs,
            [
                (operation_id("echo", "a"), "echo", "b", "a", "127.0.0.2:16384".to_string(), "echo"),
                (operation_id("echo", "c"), "echo", "b", "c", "127.0.0.4:16384".to_string(), "echo"),
                (operation_id("ping", "a"), "ping", "b", "a", "127.0.0.2".to_string(), "own tag"),
                (operation_id("ping", "c"), "ping", "b", "c", "127.0.0.4".to_string(), "own tag"),
            ]
        );
        // the udp-echo tests ask for their port at the mesh's responder port
        let control = m.operations[0].configuration().lines.into_iter().find(|l| l.label == "Control protocol/port");
        assert_eq!(control.and_then(|l| l.value), Some("v1/2967".to_string()));
        assert_eq!(m.responder.listen, Some(vec!["127.0.0.3".parse().unwrap()]));
        assert_eq!(m.responder.v1_port, Some(2967));
        assert_eq!(m.tests, ["echo", "ping"]);
        assert_eq!(m.sites[1].tags, ["eu"]);
    }

    #[test]
    fn numbers_depend_on_the_test_and_destination_only() {
        assert_eq!(operation_id("echo", "a"), 1_383_077_719);
        let before = expand("mesh.toml", FILE, "a", "mesh").unwrap();
        // a site added before the others and a test removed: the remaining pairs keep their numbers
        let edited = FILE.replace(
            "[[site]]\nname = \"a\"",
            "[[site]]\nname = \"z\"\naddress = \"127.0.0.9\"\n[[site]]\nname = \"a\"",
        );
        let edited = edited.split("[[test]]\nname = \"ping\"").next().unwrap();
        let after = expand("mesh.toml", edited, "a", "mesh").unwrap();
        let ids = |m: &Mesh| m.operations.iter().map(|o| (o.id, o.mesh.clone().unwrap().dst)).collect::<Vec<_>>();
        assert_eq!(
            ids(&after),
            [
                (operation_id("echo", "z"), "z".to_string()),
                (operation_id("echo", "b"), "b".to_string()),
                (operation_id("echo", "c"), "c".to_string())
            ]
        );
        for (id, dst) in ids(&after).into_iter().filter(|(_, d)| d != "z") {
            assert!(ids(&before).contains(&(id, dst)));
        }
    }

    #[test]
    fn a_sites_agent_is_its_http_or_the_meshs_http_port_at_its_address() {
        let urls = |text: &str| -> Vec<Option<String>> {
            expand("mesh.toml", text, "a", "mesh")
                .unwrap()
                .sites
                .iter()
                .map(|s| s.http.clone().map(|h| h.url))
                .collect()
        };
        assert_eq!(urls(FILE), [None, None, None]);
        let with = FILE.replace("tags = [\"eu\"]", "tags = [\"eu\"]\nhttp = \"https://b.example.net:9443/\"");
        assert_eq!(urls(&with), [None, Some("https://b.example.net:9443".into()), None]);
        let port = format!("http_port = 9167\n{with}");
        assert_eq!(
            urls(&port),
            [
                Some("http://127.0.0.2:9167".into()),
                Some("https://b.example.net:9443".into()),
                Some("http://127.0.0.4:9167".into())
            ]
        );
        let v6 = port.replace("\"127.0.0.4\"", "\"::1\"");
        assert_eq!(urls(&v6)[2], Some("http://[::1]:9167".into()));
        let err = |text: &str| expand("mesh.toml", text, "a", "mesh").unwrap_err().0;
        assert_eq!(
            err(&FILE.replace("tags = [\"eu\"]", "http = \"http://127.0.0.3:9167/api\"")),
            "mesh.toml: site[1].http: \"http://127.0.0.3:9167/api\" has a path; give the agent's address only, e.g. \"http://127.0.0.3:9167\""
        );
        assert_eq!(
            err(&FILE.replace("tags = [\"eu\"]", "http = \"127.0.0.3:9167\"")),
            "mesh.toml: site[1].http: \"127.0.0.3:9167\" has no scheme; expected http[s]://HOST[:PORT][/PATH], e.g. \"http://127.0.0.1:9000/ipsla\""
        );
        assert_eq!(
            err(&format!("http_port = 0\n{FILE}")),
            "mesh.toml: http_port: 0 is out of range; allowed 1 to 65535"
        );
    }

    #[test]
    fn errors_name_the_file_the_site_or_test_and_the_key() {
        let err = |text: &str, site: &str| expand("/etc/ipsla/mesh.toml", text, site, "mesh").unwrap_err().0;
        assert_eq!(err(FILE, "rome"), "mesh.site: \"rome\" is not a site of /etc/ipsla/mesh.toml; its sites: a, b, c");
        assert_eq!(
            err(&FILE.replace("\"127.0.0.3\"", "\"berlin\""), "a"),
            "/etc/ipsla/mesh.toml: site[1].address: \"berlin\" is not an IP address (the site's responder listens on it)"
        );
        assert_eq!(
            err(&FILE.replace("frequency = \"5s\"", "frequency = \"5s\"\ncodec = \"g711alaw\""), "a"),
            "/etc/ipsla/mesh.toml: test[0].codec: udp-echo does not take codec (only udp-jitter do)"
        );
        assert_eq!(
            err(&FILE.replace("frequency = \"5s\"", "target = \"127.0.0.1\""), "a"),
            "/etc/ipsla/mesh.toml: test[0].target: the mesh sets it (from the test and the destination site); remove it"
        );
        assert_eq!(
            err(&FILE.replace("name = \"ping\"", "name = \"echo\""), "a"),
            "/etc/ipsla/mesh.toml: test[1].name: \"echo\" is already the name of test[0]"
        );
        assert_eq!(
            err(&FILE.replace("name = \"c\"", "name = \"c d\""), "a"),
            "/etc/ipsla/mesh.toml: site[2].name: \"c d\" is not a name; use letters, digits, '-', '_' and '.'"
        );
        assert_eq!(
            err(&FILE.replace("v1_port = 2967", "max_sessions = 0"), "a"),
            "/etc/ipsla/mesh.toml: responder.max_sessions: 0 is out of range; allowed 1 to 1000000"
        );
        assert!(
            err("[[site]]\nname = \"a\"\nadress = \"x\"\n", "a").starts_with("/etc/ipsla/mesh.toml: TOML parse error")
        );
    }
}
