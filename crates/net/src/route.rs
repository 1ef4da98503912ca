//! Routes through netlink (rtnetlink): the agent's failover installs and withdraws routes marked
//! with its own `rtm_protocol` number, so that `ip route show proto N` lists exactly them and a
//! restart can find (and clean up) what an earlier run left.
//!
//! [`RouteTable::reconcile`] is idempotent: it reads our routes from the kernel, adds (replaces)
//! the wanted ones that are missing and deletes ours that are no longer wanted. Calling it again
//! after a link flap or a manual `ip route del` puts the table back.

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One route (`ip route replace DEST [via GW] [dev DEV] metric M table T proto P`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RouteSpec {
    /// Destination prefix (host bits zero).
    pub destination: IpNet,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface name.
    pub device: Option<String>,
    /// Metric (`priority`): lower wins, so a backup has a higher one (IOS floating static).
    pub metric: u32,
    /// Routing table (254 = main).
    pub table: u32,
}

/// What the kernel said no to.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Opening the netlink socket.
    #[error("opening a netlink socket")]
    Socket(#[from] std::io::Error),
    /// The interface does not exist.
    #[error("no interface named {0}")]
    NoDevice(String),
    /// A request the kernel refused (EPERM means CAP_NET_ADMIN is missing).
    #[error("{what} {route}: {err}")]
    Kernel {
        /// add / delete / list.
        what: &'static str,
        /// The route, as `ip route` would print it.
        route: String,
        /// The kernel's answer.
        err: String,
    },
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(d) = &self.device {
            write!(f, " dev {d}")?;
        }
        write!(f, " metric {}", self.metric)?;
        if self.table != 254 {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// A route as the kernel keys it: what identifies one of ours in a dump.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    destination: IpNet,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    metric: u32,
    table: u32,
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn key_of(m: &RouteMessage) -> Option<Key> {
    let mut dst = None;
    let (mut gateway, mut oif, mut metric, mut table) = (None, None, 0, u32::from(m.header.table));
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr(d),
            RouteAttribute::Gateway(g) => gateway = addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let len = m.header.destination_prefix_length;
    let dst = dst.unwrap_or(match m.header.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(Key { destination: IpNet::new(dst, len).ok()?, gateway, oif, metric, table })
}

/// A netlink connection to the routing table, for routes of one protocol number.
pub struct RouteTable {
    handle: Handle,
    protocol: u8,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable").field("protocol", &self.protocol).finish()
    }
}

/// What a reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Routes added (they were missing).
    pub added: Vec<RouteSpec>,
    /// Our routes deleted (no longer wanted), as the kernel listed them.
    pub removed: Vec<String>,
    /// Failures, one line each.
    pub errors: Vec<String>,
}

impl RouteTable {
    /// Opens a netlink connection; must be called inside a tokio runtime (the connection task is
    /// spawned on it).
    pub fn open(protocol: u8) -> Result<RouteTable, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(RouteTable { handle, protocol })
    }

    fn oif(&self, r: &RouteSpec) -> Result<Option<u32>, RouteError> {
        match &r.device {
            Some(d) => nix::net::if_::if_nametoindex(d.as_str()).map(Some).map_err(|_| RouteError::NoDevice(d.clone())),
            None => Ok(None),
        }
    }

    fn message(&self, r: &RouteSpec, oif: Option<u32>) -> Result<RouteMessage, String> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.destination.network(), r.destination.prefix_len())
            .map_err(|e| e.to_string())?;
        if let Some(g) = r.gateway {
            b = b.gateway(g).map_err(|e| e.to_string())?;
        }
        let mut b = b.table_id(r.table).priority(r.metric).protocol(RouteProtocol::from(self.protocol));
        if let Some(i) = oif {
            b = b.output_interface(i);
        }
        Ok(b.build())
    }

    /// Our routes (this protocol number) in every table.
    async fn ours(&self) -> Result<Vec<RouteMessage>, RouteError> {
        let mut out = Vec::new();
        for family in [
            RouteMessageBuilder::<Ipv4Addr>::new().table_id(0).build(),
            RouteMessageBuilder::<Ipv6Addr>::new().table_id(0).build(),
        ] {
            let mut s = self.handle.route().get(family).execute();
            loop {
                match s.try_next().await {
                    Ok(Some(m)) => {
                        if u8::from(m.header.protocol) == self.protocol {
                            out.push(m);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(RouteError::Kernel { what: "list", route: "routes".into(), err: e.to_string() });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Our routes as `ip route` prints them (for status and tests).
    pub async fn list(&self) -> Result<Vec<String>, RouteError> {
        Ok(self.ours().await?.iter().filter_map(key_of).map(|k| describe(&k)).collect())
    }

    /// Makes our routes exactly `wanted`: adds what is missing, deletes ours not wanted.
    pub async fn reconcile(&self, wanted: &BTreeSet<RouteSpec>) -> Reconciled {
        let mut done = Reconciled::default();
        let present = match self.ours().await {
            Ok(p) => p,
            Err(e) => {
                done.errors.push(e.to_string());
                return done;
            }
        };
        let mut wanted_keys = Vec::new();
        for r in wanted {
            let oif = match self.oif(r) {
                Ok(o) => o,
                Err(e) => {
                    done.errors.push(format!("add {r}: {e}"));
                    continue;
                }
            };
            let key = Key { destination: r.destination, gateway: r.gateway, oif, metric: r.metric, table: r.table };
            let have = present.iter().filter_map(key_of).any(|k| same(&k, &key));
            wanted_keys.push(key);
            if have {
                continue;
            }
            let result = match self.message(r, oif) {
                Ok(m) => self.handle.route().add(m).replace().execute().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => done.added.push(r.clone()),
                Err(err) => done.errors.push(RouteError::Kernel { what: "add", route: r.to_string(), err }.to_string()),
            }
        }
        for m in present {
            let Some(k) = key_of(&m) else { continue };
            if wanted_keys.iter().any(|w| same(&k, w)) {
                continue;
            }
            let text = describe(&k);
            match self.handle.route().del(m).execute().await {
                Ok(()) => done.removed.push(text),
                Err(e) => {
                    done.errors.push(RouteError::Kernel { what: "delete", route: text, err: e.to_string() }.to_string())
                }
            }
        }
        done
    }
}

/// A listed route matches a wanted one; a wanted route without a device matches any interface
/// the kernel chose for it.
fn same(listed: &Key, wanted: &Key) -> bool {
    listed.destination == wanted.destination
        && listed.gateway == wanted.gateway
        && listed.metric == wanted.metric
        && listed.table == wanted.table
        && (wanted.oif.is_none() || listed.oif == wanted.oif)
}

fn describe(k: &Key) -> String {
    RouteSpec {
        destination: k.destination,
        gateway: k.gateway,
        device: k
            .oif
            .map(|i| nix::net::if_::if_indextoname(i).map_or(format!("if{i}"), |n| n.to_string_lossy().into())),
        metric: k.metric,
        table: k.table,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_print_like_ip_route() {
        let r = RouteSpec {
            destination: "10.9.0.0/24".parse().unwrap(),
            gateway: Some("10.1.0.2".parse().unwrap()),
            device: Some("eth1".into()),
            metric: 10,
            table: 254,
        };
        assert_eq!(r.to_string(), "10.9.0.0/24 via 10.1.0.2 dev eth1 metric 10");
        let r = RouteSpec { table: 100, gateway: None, ..r };
        assert_eq!(r.to_string(), "10.9.0.0/24 dev eth1 metric 10 table 100");
    }

    #[test]
    fn a_route_without_device_matches_whatever_interface_the_kernel_chose() {
        let k = |oif| Key {
            destination: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("192.0.2.1".parse().unwrap()),
            oif,
            metric: 10,
            table: 254,
        };
        assert!(same(&k(Some(3)), &k(None)));
        assert!(same(&k(Some(3)), &k(Some(3))));
        assert!(!same(&k(Some(3)), &k(Some(4))));
        assert!(!same(&k(Some(3)), &Key { metric: 20, ..k(None) }));
    }
}
