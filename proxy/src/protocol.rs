//! The local service's protocol, from Consul's config entries: `service-defaults/<service>`'s
//! `Protocol`, else `proxy-defaults/global`'s `Config.protocol`, else `tcp`. Both are blocking
//! queries (a 404 means no entry); a change applies to new connections.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::consul::{self, Answer, Blocking, ConfigEntry, ConsulError};
use crate::watcher::{self, WatchContext, Watched, Watcher};

/// How the inbound path treats a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Bytes, decided once per connection.
    #[default]
    Tcp,
    /// HTTP/1.1 (and h2 from a client that speaks it), decided per request.
    Http,
    /// HTTP/2, decided per request.
    Http2,
    /// gRPC over HTTP/2, decided per request; a denial is `grpc-status: 7`.
    Grpc,
}

impl Protocol {
    /// Consul's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    /// Whether requests are decided one by one.
    pub fn is_http(self) -> bool {
        self != Protocol::Tcp
    }

    /// Consul's protocol names, any case; `None` for an empty or unknown one.
    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "http" => Some(Protocol::Http),
            "http2" => Some(Protocol::Http2),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two entries the protocol comes from, as last seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sources {
    service: Option<Protocol>,
    global: Option<Protocol>,
}

impl Sources {
    fn effective(self) -> Protocol {
        self.service.or(self.global).unwrap_or_default()
    }
}

/// Which entry a query reads.
#[derive(Debug, Clone, Copy)]
enum Entry {
    ServiceDefaults,
    ProxyDefaults,
}

impl Entry {
    fn watch_name(self) -> &'static str {
        match self {
            Entry::ServiceDefaults => "service_defaults",
            Entry::ProxyDefaults => "proxy_defaults",
        }
    }

    /// The protocol the entry sets, if any.
    fn protocol(self, entry: Option<&ConfigEntry>) -> Option<Protocol> {
        let entry = entry?;
        let name = match self {
            Entry::ServiceDefaults => entry.protocol.as_str(),
            Entry::ProxyDefaults => entry.config.get("protocol")?.as_str()?,
        };
        let protocol = Protocol::parse(name);
        if protocol.is_none() && !name.is_empty() {
            tracing::warn!(kind = %entry.kind, name = %entry.name, protocol = name,
                "a config entry sets a protocol this proxy does not know: ignored");
        }
        protocol
    }
}

/// The protocol a config entry of either kind sets, if any (for `fuzz/`).
#[cfg(feature = "fuzzing")]
pub(crate) fn from_entry(entry: &ConfigEntry) -> Option<Protocol> {
    match entry.kind.as_str() {
        "proxy-defaults" => Entry::ProxyDefaults.protocol(Some(entry)),
        _ => Entry::ServiceDefaults.protocol(Some(entry)),
    }
}

/// Fetches both entries for `service` (retrying while the agent fails) and returns the
/// protocol with the task that keeps it current.
pub(crate) async fn start(ctx: &WatchContext, service: &str) -> Option<Watched<Protocol>> {
    let query = |entry: Entry, blocking| {
        let (kind, name) = match entry {
            Entry::ServiceDefaults => ("service-defaults", service),
            Entry::ProxyDefaults => ("proxy-defaults", "global"),
        };
        ctx.client.config_entry(kind, name, blocking)
    };
    let first = watcher::retry("protocol", ctx, || async {
        let s = query(Entry::ServiceDefaults, Blocking::now()).await?;
        let g = query(Entry::ProxyDefaults, Blocking::now()).await?;
        Ok::<_, ConsulError>((s, g))
    })
    .await?;
    let (service_answer, global_answer) = first;
    let sources = Sources {
        service: Entry::ServiceDefaults.protocol(service_answer.body.as_ref()),
        global: Entry::ProxyDefaults.protocol(global_answer.body.as_ref()),
    };
    let protocol = sources.effective();
    tracing::info!(protocol = %protocol, "service protocol");
    let (tx, state) = watch::channel(Arc::new(protocol));
    let shared = Arc::new(Mutex::new(sources));
    let follow = |entry: Entry, answer: Answer<Option<ConfigEntry>>| {
        let (ctx, service, tx, shared) =
            (ctx.clone(), service.to_string(), tx.clone(), shared.clone());
        async move {
            let mut w = Watcher::new(entry.watch_name(), &ctx);
            let mut index = consul::next_index(0, answer.meta.index);
            loop {
                let (kind, name) = match entry {
                    Entry::ServiceDefaults => ("service-defaults", service.as_str()),
                    Entry::ProxyDefaults => ("proxy-defaults", "global"),
                };
                let query = |blocking| ctx.client.config_entry(kind, name, blocking);
                let Some(answer) = w.next_change(&mut index, query).await else {
                    return;
                };
                let seen = entry.protocol(answer.body.as_ref());
                let effective = {
                    let mut sources = shared.lock().expect("protocol lock is never poisoned");
                    match entry {
                        Entry::ServiceDefaults => sources.service = seen,
                        Entry::ProxyDefaults => sources.global = seen,
                    }
                    sources.effective()
                };
                if **tx.borrow() != effective {
                    tracing::info!(protocol = %effective, "service protocol changed: applies to new connections");
                    tx.send_replace(Arc::new(effective));
                }
            }
        }
    };
    let service_task = follow(Entry::ServiceDefaults, service_answer);
    let global_task = follow(Entry::ProxyDefaults, global_answer);
    let task = Box::pin(async move {
        tokio::join!(service_task, global_task);
    });
    Some(Watched { state, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, protocol: &str, config: serde_json::Value) -> ConfigEntry {
        ConfigEntry {
            kind: kind.into(),
            name: "x".into(),
            protocol: protocol.into(),
            config: serde_json::from_value(config).unwrap(),
        }
    }

    #[test]
    fn the_service_entry_wins_then_the_global_one_then_tcp() {
        let s = entry("service-defaults", "HTTP", serde_json::json!({}));
        let g = entry(
            "proxy-defaults",
            "",
            serde_json::json!({"protocol": "grpc"}),
        );
        let both = Sources {
            service: Entry::ServiceDefaults.protocol(Some(&s)),
            global: Entry::ProxyDefaults.protocol(Some(&g)),
        };
        assert_eq!(both.effective(), Protocol::Http);
        let global_only = Sources {
            service: Entry::ServiceDefaults.protocol(None),
            ..both
        };
        assert_eq!(global_only.effective(), Protocol::Grpc);
        assert_eq!(Sources::default().effective(), Protocol::Tcp);
        let unknown = entry("service-defaults", "thrift", serde_json::json!({}));
        assert_eq!(Entry::ServiceDefaults.protocol(Some(&unknown)), None);
    }
}
