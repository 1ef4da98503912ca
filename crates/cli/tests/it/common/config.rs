//! A typed builder for `ipsla agent` configuration files: sections and table arrays are typed,
//! operation (and other) keys go through a generic `key(name, value)`, so that a test names only
//! the keys it means and the TOML text is always well formed.
//!
//! ```ignore
//! let toml = AgentToml::new()
//!     .http(port)
//!     .store(&dir.join("runs.db"))
//!     .responder(Responder::loopback(v1))
//!     .operation(Op::new("udp-jitter", "127.0.0.1").id(2).key("port", p).key("frequency", "1s"))
//!     .track(Track::of(1, 2));
//! ```

use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Any serialisable value as a TOML value (ports, counts, durations as text, lists).
fn v(value: impl serde::Serialize) -> Value {
    Value::try_from(value).expect("a TOML value")
}

/// One `[agent]` file.
#[derive(Debug, Clone, Default)]
pub struct AgentToml {
    agent: Table,
    responder: Option<Table>,
    operations: Vec<Op>,
    tracks: Vec<Table>,
    routes: Vec<Table>,
    alerts: Vec<Table>,
    remote_writes: Vec<Table>,
    snmp: Option<Table>,
    mesh: Option<Table>,
}

impl AgentToml {
    pub fn new() -> Self {
        Self::default()
    }

    /// `agent.http = "127.0.0.1:PORT"` (0: any free port, for an agent started in-process).
    pub fn http(self, port: u16) -> Self {
        self.agent_key("http", format!("127.0.0.1:{port}"))
    }

    /// `agent.store`.
    pub fn store(self, path: &Path) -> Self {
        self.agent_key("store", path.display().to_string())
    }

    /// `agent.workers`.
    pub fn workers(self, n: u32) -> Self {
        self.agent_key("workers", n)
    }

    /// Any other `[agent]` key.
    pub fn agent_key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.agent.insert(name.into(), v(value));
        self
    }

    /// `[responder]`.
    pub fn responder(mut self, r: Responder) -> Self {
        self.responder = Some(r.0);
        self
    }

    /// One `[[operation]]`.
    pub fn operation(mut self, op: Op) -> Self {
        self.operations.push(op);
        self
    }

    /// One `[[track]]`.
    pub fn track(mut self, t: Track) -> Self {
        self.tracks.push(t.0);
        self
    }

    /// One `[[route]]`.
    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r.0);
        self
    }

    /// One `[[alert]]`.
    pub fn alert(mut self, a: Alert) -> Self {
        self.alerts.push(a.0);
        self
    }

    /// One `[[remote_write]]`.
    pub fn remote_write(mut self, r: RemoteWrite) -> Self {
        self.remote_writes.push(r.0);
        self
    }

    /// `[snmp]` with `agentx = MASTER` (`unix:/PATH`, `tcp:ADDR:PORT`).
    pub fn snmp(mut self, master: &str) -> Self {
        self.snmp = Some(Table::from_iter([("agentx".to_string(), v(master))]));
        self
    }

    /// `[mesh]`: the mesh file and this agent's site in it.
    pub fn mesh(mut self, file: &Path, site: &str) -> Self {
        let mut t = Table::new();
        t.insert("file".into(), v(file.display().to_string()));
        t.insert("site".into(), v(site));
        self.mesh = Some(t);
        self
    }

    /// Any other `[mesh]` key (after [`AgentToml::mesh`]).
    pub fn mesh_key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.mesh.get_or_insert_with(Table::new).insert(name.into(), v(value));
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut top = Table::new();
        if !self.agent.is_empty() {
            top.insert("agent".into(), Value::Table(self.agent.clone()));
        }
        if let Some(r) = &self.responder {
            top.insert("responder".into(), Value::Table(r.clone()));
        }
        if let Some(s) = &self.snmp {
            top.insert("snmp".into(), Value::Table(s.clone()));
        }
        if let Some(m) = &self.mesh {
            top.insert("mesh".into(), Value::Table(m.clone()));
        }
        let array = |v: Vec<Table>| Value::Array(v.into_iter().map(Value::Table).collect());
        if !self.operations.is_empty() {
            top.insert("operation".into(), array(self.operations.iter().map(Op::table).collect()));
        }
        for (name, v) in [
            ("track", &self.tracks),
            ("route", &self.routes),
            ("alert", &self.alerts),
            ("remote_write", &self.remote_writes),
        ] {
            if !v.is_empty() {
                top.insert(name.into(), array(v.clone()));
            }
        }
        toml::to_string(&top).expect("a TOML table renders")
    }

    /// Writes the text to `path`; returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.render()).unwrap();
        path.to_path_buf()
    }
}

/// `[responder]`.
#[derive(Debug, Clone, Default)]
pub struct Responder(Table);

impl Responder {
    /// IP SLA control v1 on 127.0.0.1:`v1_port`, v2 off.
    pub fn loopback(v1_port: u16) -> Self {
        Self::default().key("listen", vec!["127.0.0.1"]).key("v1_port", v1_port).key("v2", false)
    }

    /// Listening on 127.0.0.1 with IP SLA control off (for TWAMP, STAMP ... only).
    pub fn loopback_without_ip_sla() -> Self {
        Self::default().key("listen", vec!["127.0.0.1"]).key("v1", false).key("v2", false)
    }

    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(name.into(), v(value));
        self
    }
}

/// One `[[operation]]` with its `[[operation.reaction]]`s.
#[derive(Debug, Clone)]
pub struct Op {
    keys: Table,
    reactions: Vec<Table>,
}

impl Op {
    /// `type` and `target`; every other key with [`Op::key`].
    pub fn new(kind: &str, target: &str) -> Self {
        let mut keys = Table::new();
        keys.insert("type".into(), kind.into());
        keys.insert("target".into(), target.into());
        Op { keys, reactions: Vec::new() }
    }

    pub fn id(self, id: u32) -> Self {
        self.key("id", id)
    }

    /// Any operation key (port, frequency, timeout, packets, ...).
    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.keys.insert(name.into(), v(value));
        self
    }

    pub fn reaction(mut self, r: Reaction) -> Self {
        self.reactions.push(r.0);
        self
    }

    fn table(&self) -> Table {
        let mut t = self.keys.clone();
        if !self.reactions.is_empty() {
            t.insert("reaction".into(), Value::Array(self.reactions.iter().cloned().map(Value::Table).collect()));
        }
        t
    }
}

/// One `[[operation.reaction]]`.
#[derive(Debug, Clone)]
pub struct Reaction(Table);

impl Reaction {
    /// `element`, `threshold_type = "immediate"` and `action`.
    pub fn immediate(element: &str, action: &str) -> Self {
        let mut t = Table::new();
        t.insert("element".into(), element.into());
        t.insert("threshold_type".into(), "immediate".into());
        t.insert("action".into(), action.into());
        Reaction(t)
    }

    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(name.into(), v(value));
        self
    }
}

/// One `[[track]]`.
#[derive(Debug, Clone)]
pub struct Track(Table);

impl Track {
    /// Track `id` follows operation `op` (mode with [`Track::key`]).
    pub fn of(id: u32, op: u32) -> Self {
        let mut t = Table::new();
        t.insert("id".into(), id.into());
        t.insert("operation".into(), op.into());
        Track(t)
    }

    /// Track `id` is the boolean `list` ("and", "or") of `members`.
    pub fn list(id: u32, list: &str, members: &[u32]) -> Self {
        let mut t = Table::new();
        t.insert("id".into(), id.into());
        t.insert("list".into(), list.into());
        t.insert("members".into(), Value::Array(members.iter().map(|m| Value::from(*m)).collect()));
        Track(t)
    }

    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(name.into(), v(value));
        self
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route(Table);

impl Route {
    pub fn new(destination: &str, gateway: &str) -> Self {
        let mut t = Table::new();
        t.insert("destination".into(), destination.into());
        t.insert("gateway".into(), gateway.into());
        Route(t)
    }

    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(name.into(), v(value));
        self
    }
}

/// One `[[alert]]`.
#[derive(Debug, Clone)]
pub struct Alert(Table);

impl Alert {
    /// `type = "webhook"` posting to `url`.
    pub fn webhook(url: &str) -> Self {
        let mut t = Table::new();
        t.insert("type".into(), "webhook".into());
        t.insert("url".into(), url.into());
        Alert(t)
    }

    /// `type = "exec"` running `command`.
    pub fn exec(command: &[&str]) -> Self {
        let mut t = Table::new();
        t.insert("type".into(), "exec".into());
        t.insert("command".into(), command.to_vec().into());
        Alert(t)
    }

    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(name.into(), v(value));
        self
    }
}

/// One `[[remote_write]]`.
#[derive(Debug, Clone)]
pub struct RemoteWrite(Table);

impl RemoteWrite {
    /// Pushing to `url`.
    pub fn to(url: &str) -> Self {
        let mut t = Table::new();
        t.insert("url".into(), url.into());
        RemoteWrite(t)
    }

    pub fn key(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(name.into(), v(value));
        self
    }
}

#[test]
fn renders_a_file_the_agent_accepts() {
    let cfg = AgentToml::new()
        .http(0)
        .store(Path::new("/tmp/ipsla-builder-test.db"))
        .workers(2)
        .responder(Responder::loopback(1967))
        .operation(
            Op::new("udp-echo", "127.0.0.1")
                .id(1)
                .key("port", 5000u16)
                .key("tag", r#"edge "A" \ site"#)
                .reaction(Reaction::immediate("connectionLoss", "alert")),
        )
        .operation(Op::new("icmp-echo", "127.0.0.1").id(2).key("frequency", "10s"))
        .track(Track::of(1, 1).key("mode", "state"))
        .track(Track::list(5, "and", &[1]))
        .alert(Alert::exec(&["true"]).key("events", vec!["reaction"]));
    let text = cfg.render();
    assert!(text.contains("[[operation.reaction]]") && text.contains("[[track]]"), "{text}");
    let file = ipsla_agent::daemon::AgentFile::parse(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!((file.operation.len(), file.track.len(), file.alert.len()), (2, 2, 1), "{text}");
    assert_eq!(file.agent.workers, Some(2));
    let valid = file.validate().unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(valid.http.port(), 0);
    assert_eq!(valid.operations.len(), 2);
    assert!(valid.responder.is_some());
}
