//! What `tandem-injector` and `tandem-proxy` must agree on, in one place: the proxy's flags and
//! listener ports, what a valid service name is, and the upstream syntax.
//!
//! The injector writes a proxy command line from pod annotations; the proxy parses it. Both
//! parse names and upstreams with the types below, so a pod the injector admits is a pod whose
//! proxy accepts its flags (`proxy/tests/injector_contract.rs` runs the proxy's own parser over
//! every sidecar the injector's golden tests write).
//!
//! ```
//! use tandem_contract::{ServiceName, Upstream};
//! let up: Upstream = "web.v2:1234:dc2".parse().unwrap();
//! assert_eq!(up.name, "web.v2".parse::<ServiceName>().unwrap());
//! assert_eq!(up.to_string(), "web.v2:1234:dc2");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The proxy's flags the injector writes.
pub mod flags {
    /// `--service NAME`: the service this pod serves.
    pub const SERVICE: &str = "--service";
    /// `--service-port PORT`: the app's port; inbound connections are forwarded there.
    pub const SERVICE_PORT: &str = "--service-port";
    /// `--upstreams LIST`: [`crate::UpstreamList`] syntax.
    pub const UPSTREAMS: &str = "--upstreams";
    /// `--check-ready`: the readiness probe mode.
    pub const CHECK_READY: &str = "--check-ready";
    /// `--tunnel`: carry connections to other Tandem proxies as streams of one mTLS connection.
    pub const TUNNEL: &str = "--tunnel";
}

/// The port of the proxy's public (inbound mTLS) listener in a pod.
pub const PUBLIC_LISTENER_PORT: u16 = 20000;
/// The port of the proxy's admin listener (`127.0.0.1`) in a pod.
pub const ADMIN_LISTENER_PORT: u16 = 19000;

/// The longest service name: one DNS label, as in a Kubernetes name and Consul's DNS interface.
pub const MAX_SERVICE_NAME: usize = 63;

/// A Consul service name as the proxy registers it, asks leaves for and dials.
///
/// Real Consul registers names such as `web`, `web.v2`, `Web_UPPER` or `a.b` and issues
/// leaves for them (`.../svc/web.v2`). Accepted here: 1 to 63 ASCII letters, digits, `-`, `_`
/// and `.`; dots separate non-empty parts (the name is the first labels of the SNI Consul's
/// proxies use), and no part starts or ends with `-`. Anything else (spaces, `/`, `:`, `,`)
/// could not travel through a URL path, the SNI or the `--upstreams` syntax unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

impl ServiceName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a service name must not be empty".into());
        }
        if s.len() > MAX_SERVICE_NAME {
            return Err(format!(
                "a service name has at most {MAX_SERVICE_NAME} characters (this one has {})",
                s.len()
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "{bad:?} is not allowed in a service name (letters, digits, '-', '_' and '.' are)"
            ));
        }
        for part in s.split('.') {
            if part.is_empty() {
                return Err(
                    "a service name does not start or end with '.' or have two in a row".into(),
                );
            }
            if part.starts_with('-') || part.ends_with('-') {
                return Err(format!(
                    "{part:?}: no part of a service name starts or ends with '-'"
                ));
            }
        }
        Ok(ServiceName(s.to_string()))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A datacenter name: ASCII letters, digits, `-` and `_` (what Consul allows in `datacenter`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Datacenter(String);

impl Datacenter {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Datacenter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the datacenter is empty".into());
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(format!(
                "{bad:?} is not allowed in a datacenter (letters, digits, '-' and '_' are)"
            ));
        }
        Ok(Datacenter(s.to_string()))
    }
}

impl fmt::Display for Datacenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an upstream's instances are found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// The healthy mesh instances of a service (`/v1/health/connect/NAME`).
    Service,
    /// What a prepared query returns (`/v1/query/NAME/execute`), written
    /// `prepared_query:NAME:PORT` as in consul-k8s.
    PreparedQuery,
}

impl Destination {
    /// Consul's `DestinationType` in an upstream registration.
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Service => "service",
            Destination::PreparedQuery => "prepared_query",
        }
    }
}

/// The prefix of a prepared-query upstream.
pub const PREPARED_QUERY_PREFIX: &str = "prepared_query:";

/// One upstream: `NAME:PORT[:DATACENTER]` (a service, optionally in another datacenter) or
/// `prepared_query:NAME:PORT`; a local listener on `127.0.0.1:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Whether `name` is a service or a prepared query.
    pub destination: Destination,
    /// The service, or the prepared query's name (queries are named like services).
    pub name: ServiceName,
    /// 1-65535 when parsed; 0 (the OS picks) only when built in code, for tests.
    pub local_port: u16,
    /// The datacenter to discover a service in (`?dc=`); `None` is the agent's own. Always
    /// `None` for a prepared query (the query decides).
    pub datacenter: Option<Datacenter>,
}

impl Upstream {
    /// A service upstream built in code; `local_port` 0 lets the OS pick (tests).
    pub fn new(name: ServiceName, local_port: u16, datacenter: Option<Datacenter>) -> Self {
        Upstream {
            destination: Destination::Service,
            name,
            local_port,
            datacenter,
        }
    }

    /// A prepared-query upstream built in code.
    pub fn prepared_query(name: ServiceName, local_port: u16) -> Self {
        Upstream {
            destination: Destination::PreparedQuery,
            name,
            local_port,
            datacenter: None,
        }
    }
}

/// Why one upstream entry was refused: the entry as written and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// The entry as written (one item of the list).
    pub entry: String,
    /// What is wrong with it, e.g. `has no local port (want NAME:PORT[:DATACENTER])`.
    pub problem: String,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream {:?}: {}", self.entry, self.problem)
    }
}

impl std::error::Error for UpstreamError {}

impl FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| UpstreamError {
            entry: entry.to_string(),
            problem,
        };
        // The prefix is the first part like any other, spaces around its ':' included, so that
        // `prepared_query :q:1` is the query it displays as, not a service named prepared_query.
        let all: Vec<&str> = entry.split(':').map(str::trim).collect();
        let (destination, parts) = match all.as_slice() {
            [first, rest @ ..] if PREPARED_QUERY_PREFIX.strip_suffix(':') == Some(*first) => {
                (Destination::PreparedQuery, rest)
            }
            parts => (Destination::Service, parts),
        };
        let (name, port, datacenter) = match (destination, parts) {
            (_, [name, port]) => (*name, *port, None),
            (Destination::Service, [_]) => {
                return Err(fail("has no local port (want NAME:PORT[:DATACENTER])".into()))
            }
            (Destination::Service, [name, port, dc]) => (*name, *port, Some(*dc)),
            (Destination::Service, _) => {
                return Err(fail("has too many ':' (want NAME:PORT[:DATACENTER])".into()))
            }
            (Destination::PreparedQuery, _) => {
                return Err(fail(
                    "a prepared query is written prepared_query:NAME:PORT (no datacenter: the query decides)"
                        .into(),
                ))
            }
        };
        let name = name.parse::<ServiceName>().map_err(fail)?;
        let local_port = parse_port(port).map_err(|e| fail(format!("local port {e}")))?;
        let datacenter = datacenter
            .map(|dc| dc.parse::<Datacenter>())
            .transpose()
            .map_err(|e| fail(format!("datacenter: {e}")))?;
        Ok(Upstream {
            destination,
            name,
            local_port,
            datacenter,
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.destination == Destination::PreparedQuery {
            f.write_str(PREPARED_QUERY_PREFIX)?;
        }
        write!(f, "{}:{}", self.name, self.local_port)?;
        if let Some(dc) = &self.datacenter {
            write!(f, ":{dc}")?;
        }
        Ok(())
    }
}

/// The entries of an upstream list: separated by commas, spaces or newlines (consul-k8s accepts
/// all three), empty ones (a trailing comma) skipped. Whitespace around a `:` belongs to the
/// entry (`db : 1234` is `db:1234`, as consul-k8s trims each part).
pub fn upstream_entries(list: &str) -> Vec<String> {
    let mut joined = String::with_capacity(list.len());
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            // Drop a run of whitespace that ends at a ':' or follows one.
            let mut run = String::from(c);
            while let Some(w) = chars.next_if(|w| w.is_whitespace()) {
                run.push(w);
            }
            if !joined.ends_with(':') && chars.peek() != Some(&':') {
                joined.push_str(&run);
            }
        } else {
            joined.push(c);
        }
    }
    joined
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// The whole `--upstreams` value ([`upstream_entries`]). Two entries may not share a local port;
/// the same service may be listed more than once (in two datacenters, the usual failover pair,
/// or on several local ports).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamList(pub Vec<Upstream>);

/// Every problem of an upstream list, one per bad entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamListError(pub Vec<UpstreamError>);

impl fmt::Display for UpstreamListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UpstreamListError {}

impl FromStr for UpstreamList {
    type Err = UpstreamListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list: Vec<Upstream> = Vec::new();
        let mut errors = Vec::new();
        for entry in upstream_entries(s) {
            let entry = entry.as_str();
            match entry.parse::<Upstream>() {
                Err(e) => errors.push(e),
                Ok(u) => match list.iter().find(|o| o.local_port == u.local_port) {
                    Some(other) => errors.push(UpstreamError {
                        entry: entry.to_string(),
                        problem: format!(
                            "local port {} is already used by upstream {:?}",
                            u.local_port,
                            other.to_string()
                        ),
                    }),
                    None => list.push(u),
                },
            }
        }
        if errors.is_empty() {
            Ok(UpstreamList(list))
        } else {
            Err(UpstreamListError(errors))
        }
    }
}

impl fmt::Display for UpstreamList {
    /// The `--upstreams` value: entries joined by commas (parses back to the same list).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, u) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

/// A port: decimal 1-65535 (a hex or named port is refused, never guessed). The error says what
/// is wrong with `raw` (`"abc" is not a number`), for the caller to prefix with what the port is.
pub fn parse_port(raw: &str) -> Result<u16, String> {
    if raw.is_empty() {
        return Err("is missing".into());
    }
    match raw.parse::<u64>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err(format!("{raw:?} is out of range (1-65535)")),
        Err(_) => Err(format!("{raw:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_real_consul_registers_are_accepted() {
        for name in [
            "web",
            "web.v2",
            "Web_UPPER",
            "a.b",
            "static-server",
            "9lives",
            "a",
        ] {
            assert_eq!(name.parse::<ServiceName>().unwrap().as_str(), name);
        }
    }

    #[test]
    fn names_that_cannot_travel_unchanged_are_refused() {
        let long = "a".repeat(64);
        for (name, says) in [
            ("", "empty"),
            ("web/v2", "'/'"),
            ("d b", "' '"),
            ("db:1", "':'"),
            (".web", "'.'"),
            ("web.", "'.'"),
            ("a..b", "two in a row"),
            ("-web", "starts or ends with '-'"),
            ("web.v2-", "starts or ends with '-'"),
            (long.as_str(), "at most 63"),
        ] {
            let err = name.parse::<ServiceName>().unwrap_err();
            assert!(err.contains(says), "{name:?}: {err}");
        }
    }

    #[test]
    fn upstreams_round_trip_through_display() {
        let list: UpstreamList = " db:1234 , web.v2:6789:dc2,".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(list.0[1].datacenter.as_ref().unwrap().as_str(), "dc2");
        assert_eq!(list.to_string(), "db:1234,web.v2:6789:dc2");
        assert_eq!(list.to_string().parse::<UpstreamList>().unwrap(), list);
    }

    #[test]
    fn upstream_errors_name_the_entry_and_the_problem() {
        let err = |s: &str| s.parse::<UpstreamList>().unwrap_err().to_string();
        assert_eq!(
            err("db:abc"),
            "upstream \"db:abc\": local port \"abc\" is not a number"
        );
        assert_eq!(
            err("db:70000"),
            "upstream \"db:70000\": local port \"70000\" is out of range (1-65535)"
        );
        assert!(err("db").contains("has no local port"));
        assert!(err("db:1:dc:x").contains("too many ':'"));
        assert!(err("db:0x10").contains("not a number"));
        assert!(err("db:1:d.c").contains("datacenter"));
        assert!(err("prepared_query:q:1:dc2").contains("no datacenter"));
        assert!(err("prepared_query:q").contains("prepared_query:NAME:PORT"));
        let all = err("db:x,auth:1,web:1");
        assert!(all.contains("\"db:x\""), "{all}");
        assert!(
            all.contains("local port 1 is already used by upstream \"auth:1\""),
            "{all}"
        );
    }

    /// Found while writing `fuzz/` (injector_annotations, its display round trip, on an input
    /// written by hand): `prepared_query :5:dc` parsed as a service named `prepared_query` on
    /// port 5 in dc, which displays as `prepared_query:5:dc`, a prepared query that is refused.
    /// Now both are read the same way (and refused).
    #[test]
    fn the_prepared_query_prefix_is_a_part_like_the_others() {
        let spaced = "prepared_query :5:dc".parse::<Upstream>().unwrap_err();
        let plain = "prepared_query:5:dc".parse::<Upstream>().unwrap_err();
        assert_eq!(spaced.problem, plain.problem);
        let query: Upstream = " prepared_query : geo-db : 1237 ".parse().unwrap();
        assert_eq!(query.destination, Destination::PreparedQuery);
        assert_eq!(query.to_string(), "prepared_query:geo-db:1237");
        assert_eq!(query.to_string().parse::<Upstream>(), Ok(query));
        assert!("prepared_query"
            .parse::<Upstream>()
            .unwrap_err()
            .problem
            .contains("prepared_query:NAME:PORT"));
    }

    #[test]
    fn consul_k8s_forms_parse() {
        // The failover pair, several local ports, spaces and newlines, a prepared query.
        let list: UpstreamList = "db:1234,db : 1235 : dc2 db:1236\n prepared_query:geo-db:1237,"
            .parse()
            .unwrap();
        assert_eq!(list.0.len(), 4);
        assert_eq!(list.0[1].datacenter.as_ref().unwrap().as_str(), "dc2");
        assert_eq!(list.0[3].destination, Destination::PreparedQuery);
        assert_eq!(list.0[3].name.as_str(), "geo-db");
        assert_eq!(
            list.to_string(),
            "db:1234,db:1235:dc2,db:1236,prepared_query:geo-db:1237"
        );
        assert_eq!(list.to_string().parse::<UpstreamList>().unwrap(), list);
    }
}
