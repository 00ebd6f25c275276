//! Health checks: definitions as registered and their runtime state; [`runner`] has the tasks
//! that probe TCP and HTTP checks at their interval and expire TTL checks.

mod runner;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::json::{DecodeError, Fields};

pub(crate) use runner::{spawn_runner, OwnedTask};

pub(crate) const PASSING: &str = "passing";
pub(crate) const WARNING: &str = "warning";
pub(crate) const CRITICAL: &str = "critical";

/// Consul's default TCP/HTTP check timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Consul's `OutputMaxSize` default.
const OUTPUT_MAX: usize = 4096;

/// The keys Consul 1.10 accepts in a check of a service registration (`structs.CheckType`,
/// with the snake_case aliases its decoder knows); anything else is `json: unknown field`.
pub(crate) const CHECK_TYPE_FIELDS: &[&str] = &[
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "ScriptArgs",
    "script_args",
    "Args",
    "HTTP",
    "Header",
    "Method",
    "Body",
    "TCP",
    "Interval",
    "AliasNode",
    "AliasService",
    "DockerContainerID",
    "docker_container_id",
    "Shell",
    "H2PING",
    "GRPC",
    "GRPCUseTLS",
    "grpc_use_tls",
    "TLSServerName",
    "tls_server_name",
    "TLSSkipVerify",
    "tls_skip_verify",
    "Timeout",
    "TTL",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "ProxyHTTP",
    "ProxyGRPC",
    "DeregisterCriticalServiceAfter",
    "deregister_critical_service_after",
    "OutputMaxSize",
    "ServiceID",
    "service_id",
];

/// The keys of a `PUT /v1/agent/check/register` body (`structs.CheckDefinition`): `ID` and
/// `Token` instead of `CheckID` and the proxy fields.
pub(crate) const CHECK_DEFINITION_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Notes",
    "ServiceID",
    "service_id",
    "Token",
    "Status",
    "ScriptArgs",
    "script_args",
    "Args",
    "HTTP",
    "H2PING",
    "Header",
    "Method",
    "Body",
    "TCP",
    "Interval",
    "DockerContainerID",
    "docker_container_id",
    "Shell",
    "GRPC",
    "GRPCUseTLS",
    "grpc_use_tls",
    "TLSServerName",
    "tls_server_name",
    "TLSSkipVerify",
    "tls_skip_verify",
    "AliasNode",
    "AliasService",
    "Timeout",
    "TTL",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "DeregisterCriticalServiceAfter",
    "deregister_critical_service_after",
    "OutputMaxSize",
];

/// A check as given in a registration (`structs.CheckType` / `CheckDefinition`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CheckDefinition {
    pub id: String,
    pub name: String,
    pub notes: String,
    pub status: Option<String>,
    pub service_id: String,
    pub ttl: Option<Duration>,
    pub tcp: String,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub alias_service: String,
    pub http: Option<HttpProbe>,
    /// Check kinds Consul knows but this agent does not run (script, gRPC, ...).
    pub unsupported: Option<&'static str>,
}

impl CheckDefinition {
    pub(crate) fn decode(f: &Fields<'_>) -> Result<Self, DecodeError> {
        let id = match f.string("CheckID")? {
            Some(id) => id,
            None => f.string_or_default("ID")?,
        };
        let mut unsupported = None;
        for (key, kind) in [
            ("GRPC", "grpc"),
            ("H2PING", "h2ping"),
            ("UDP", "udp"),
            ("OSService", "os_service"),
            ("DockerContainerID", "docker"),
            ("AliasNode", "alias node"),
        ] {
            if f.string(key)?.is_some_and(|v| !v.is_empty()) {
                unsupported = Some(kind);
            }
        }
        if f.strings("Args")?.is_some_and(|v| !v.is_empty())
            || f.strings("ScriptArgs")?.is_some_and(|v| !v.is_empty())
        {
            unsupported = Some("script");
        }
        let http = match f.string("HTTP")?.filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let mut headers = Vec::new();
                if let Some(header) = f.object("Header", "map[string][]string")? {
                    if let Some(serde_json::Value::Object(map)) = f.raw("Header") {
                        for name in map.keys() {
                            for value in header.strings(name)?.unwrap_or_default() {
                                headers.push((name.clone(), value));
                            }
                        }
                    }
                }
                Some(HttpProbe {
                    url,
                    method: f
                        .string("Method")?
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "GET".into()),
                    headers,
                    body: f.string_or_default("Body")?,
                    tls_skip_verify: f.boolean("TLSSkipVerify")?,
                    disable_redirects: f.boolean("DisableRedirects")?,
                })
            }
        };
        Ok(CheckDefinition {
            id,
            name: f.string_or_default("Name")?,
            notes: f.string_or_default("Notes")?,
            status: f.string("Status")?.filter(|s| !s.is_empty()),
            service_id: f.string_or_default("ServiceID")?,
            ttl: f.duration("TTL")?,
            tcp: f.string_or_default("TCP")?,
            interval: f.duration("Interval")?,
            timeout: f.duration("Timeout")?,
            alias_service: f.string_or_default("AliasService")?,
            http,
            unsupported,
        })
    }

    /// Whether an initial `Status` given with the check is one Consul accepts.
    pub(crate) fn status_is_valid(&self) -> bool {
        self.status
            .as_deref()
            .is_none_or(|s| [PASSING, WARNING, CRITICAL].contains(&s))
    }

    /// `CheckType.Validate` plus this agent's limits; the text follows Consul's.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.unsupported == Some("script") {
            return Err("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true".into());
        }
        if let Some(kind) = self.unsupported {
            return Err(format!(
                "{kind} checks are not supported by tandem-agent dev (TTL, TCP, HTTP and alias checks are)"
            ));
        }
        let interval_given = self.interval.is_some_and(|d| !d.is_zero());
        let ttl_given = self.ttl.is_some_and(|d| !d.is_zero());
        if (!self.tcp.is_empty() || self.http.is_some()) && !interval_given {
            return Err("Interval must be > 0 for Script, HTTP, H2PING, or TCP checks".into());
        }
        if interval_given && ttl_given {
            return Err("Interval and TTL cannot both be specified".into());
        }
        if self
            .http
            .as_ref()
            .is_some_and(|h| reqwest::Method::from_bytes(h.method.as_bytes()).is_err())
        {
            return Err("HTTP check method is not a valid HTTP method".into());
        }
        if self.tcp.is_empty() && self.http.is_none() && !ttl_given && self.alias_service.is_empty()
        {
            // What `CheckType.Validate` says when nothing but the TTL kind is left.
            return Err("TTL must be > 0 for TTL checks".into());
        }
        Ok(())
    }

    pub(crate) fn kind(&self) -> CheckKind {
        if let Some(http) = &self.http {
            CheckKind::Http {
                probe: http.clone(),
                interval: self.interval.unwrap_or(DEFAULT_TIMEOUT),
                timeout: self.timeout,
            }
        } else if !self.tcp.is_empty() {
            CheckKind::Tcp {
                address: self.tcp.clone(),
                interval: self.interval.unwrap_or(DEFAULT_TIMEOUT),
                timeout: self.timeout,
            }
        } else if let Some(ttl) = self.ttl.filter(|d| !d.is_zero()) {
            CheckKind::Ttl(ttl)
        } else {
            CheckKind::Alias {
                service_id: self.alias_service.clone(),
            }
        }
    }
}

/// What an HTTP check requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpProbe {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub tls_skip_verify: bool,
    pub disable_redirects: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CheckKind {
    /// The node's `serfHealth`, always passing on a single-node agent.
    Serf,
    Ttl(Duration),
    Tcp {
        address: String,
        interval: Duration,
        timeout: Option<Duration>,
    },
    Http {
        probe: HttpProbe,
        interval: Duration,
        timeout: Option<Duration>,
    },
    Alias {
        service_id: String,
    },
}

/// A registered check with its current state (`structs.HealthCheck`).
#[derive(Clone, Debug)]
pub(crate) struct Check {
    pub id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub kind: CheckKind,
    /// `Interval` and `Timeout` as a 1.10 agent shows them: Go durations for a check
    /// registered on its own (`/v1/agent/check/register`), empty for one that came with a
    /// service registration.
    pub interval: String,
    pub timeout: String,
    pub create_index: u64,
    pub modify_index: u64,
    /// TTL checks: when the check turns critical unless updated.
    pub ttl_deadline: Option<Instant>,
    /// TTL checks: poked on every update so the expiry task re-reads the deadline.
    pub ttl_reset: Option<Arc<Notify>>,
}

impl Check {
    pub(crate) fn type_name(&self) -> &'static str {
        match self.kind {
            CheckKind::Serf => "",
            CheckKind::Ttl(_) => "ttl",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Alias { .. } => "alias",
        }
    }
}

/// Truncates check output the way Consul does for oversized TTL updates.
pub(crate) fn limit_output(output: &str) -> String {
    if output.len() <= OUTPUT_MAX {
        return output.to_string();
    }
    let mut end = OUTPUT_MAX;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} ... (captured {end} of {} bytes)",
        &output[..end],
        output.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_without_interval_is_refused() {
        let def = CheckDefinition {
            tcp: "127.0.0.1:1".into(),
            ..Default::default()
        };
        assert_eq!(
            def.validate().unwrap_err(),
            "Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
        );
    }

    #[test]
    fn http_checks_need_an_interval_and_a_valid_method() {
        let probe = HttpProbe {
            url: "http://127.0.0.1:1/health".into(),
            method: "GET".into(),
            headers: Vec::new(),
            body: String::new(),
            tls_skip_verify: false,
            disable_redirects: false,
        };
        let def = CheckDefinition {
            http: Some(probe.clone()),
            ..Default::default()
        };
        assert!(def
            .validate()
            .unwrap_err()
            .starts_with("Interval must be > 0"));
        let def = CheckDefinition {
            http: Some(HttpProbe {
                method: "GE T".into(),
                ..probe
            }),
            interval: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(def.validate().is_err());
    }

    #[test]
    fn ttl_and_interval_together_are_refused() {
        let def = CheckDefinition {
            ttl: Some(Duration::from_secs(5)),
            interval: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert!(def.validate().is_err());
    }

    #[test]
    fn oversized_output_is_truncated() {
        let long = "x".repeat(5000);
        let out = limit_output(&long);
        assert!(out.starts_with(&"x".repeat(4096)));
        assert!(out.ends_with("(captured 4096 of 5000 bytes)"));
    }
}
