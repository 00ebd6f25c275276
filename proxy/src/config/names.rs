//! The typed values of the command line: service names and upstream entries.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A Consul service name: ASCII letters, digits, `-` and `_`, at most 63 characters (what
/// Consul accepts without DNS warnings and what fits in an SNI label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a service name must not be empty".into());
        }
        if s.len() > 63 {
            return Err("a service name has at most 63 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "a service name has only letters, digits, '-' and '_' (found {c:?})"
            ));
        }
        Ok(ServiceName(s.to_string()))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `--upstreams` entry: a local listener on `127.0.0.1:<local_port>` for `name`, optionally
/// in another datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub name: ServiceName,
    pub local_port: u16,
    pub datacenter: Option<String>,
}

impl Upstream {
    /// An upstream built in code; `local_port` 0 lets the OS pick (tests).
    pub fn new(name: ServiceName, local_port: u16, datacenter: Option<String>) -> Self {
        Upstream {
            name,
            local_port,
            datacenter,
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.local_port)?;
        if let Some(dc) = &self.datacenter {
            write!(f, ":{dc}")?;
        }
        Ok(())
    }
}

impl FromStr for Upstream {
    type Err = String;
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = entry.trim().split(':').map(str::trim).collect();
        let (name, port, dc) = match parts.as_slice() {
            [name, port] => (*name, *port, None),
            [name, port, dc] => (*name, *port, Some(*dc)),
            _ => {
                return Err(format!(
                    "invalid --upstreams \"{entry}\": expected NAME:PORT or NAME:PORT:DATACENTER"
                ))
            }
        };
        let name = name
            .parse::<ServiceName>()
            .map_err(|e| format!("invalid --upstreams \"{entry}\": {e}"))?;
        let local_port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "invalid --upstreams \"{entry}\": port must be 1-65535"
                ))
            }
        };
        let datacenter = match dc {
            Some(dc) if dc.is_empty() || !dc.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
                return Err(format!(
                    "invalid --upstreams \"{entry}\": datacenter must be letters, digits, '-' or '_'"
                ))
            }
            Some(dc) => Some(dc.to_string()),
            None => None,
        };
        Ok(Upstream {
            name,
            local_port,
            datacenter,
        })
    }
}

/// The whole `--upstreams` value. Parsing reports every bad entry, duplicate names and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamList(pub Vec<Upstream>);

impl FromStr for UpstreamList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = Vec::new();
        let mut errors = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.parse::<Upstream>() {
                Ok(u) => {
                    if list
                        .iter()
                        .any(|o: &Upstream| o.name == u.name && o.datacenter == u.datacenter)
                    {
                        errors.push(format!(
                            "invalid --upstreams \"{entry}\": {} is listed twice",
                            u.name
                        ));
                    } else if list.iter().any(|o: &Upstream| o.local_port == u.local_port) {
                        errors.push(format!(
                            "invalid --upstreams \"{entry}\": port {} is already used by another upstream",
                            u.local_port
                        ));
                    } else {
                        list.push(u);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(UpstreamList(list))
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_whitespace_and_datacenter() {
        let list: UpstreamList = " db:1234 , auth:6789:dc2,".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(list.0[0].name.as_str(), "db");
        assert_eq!(list.0[0].local_port, 1234);
        assert_eq!(list.0[0].datacenter, None);
        assert_eq!(list.0[1].datacenter.as_deref(), Some("dc2"));
    }

    #[test]
    fn upstream_errors_name_the_entry_and_the_expectation() {
        let err = "db:abc".parse::<UpstreamList>().unwrap_err();
        assert_eq!(err, "invalid --upstreams \"db:abc\": port must be 1-65535");
        let err = "db".parse::<UpstreamList>().unwrap_err();
        assert!(err.contains("expected NAME:PORT"), "{err}");
        let err = "db:0".parse::<UpstreamList>().unwrap_err();
        assert!(err.contains("1-65535"), "{err}");
        let err = "d b:1".parse::<UpstreamList>().unwrap_err();
        assert!(err.contains("letters, digits"), "{err}");
    }

    #[test]
    fn upstream_list_reports_every_bad_entry_and_duplicates() {
        let err = "db:x,auth:1,auth:2,web:1"
            .parse::<UpstreamList>()
            .unwrap_err();
        assert!(err.contains("\"db:x\""), "{err}");
        assert!(err.contains("auth is listed twice"), "{err}");
        assert!(err.contains("port 1 is already used"), "{err}");
    }
}
