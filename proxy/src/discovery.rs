//! Upstream discovery: one blocking query per upstream on
//! `/v1/health/connect/<name>?passing[&dc=]`, published as a list of [`Endpoint`]s that the
//! outbound path reads per connection, plus the spreading of connections across them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Upstream;
use crate::consul::{self, Blocking, ConsulClient, ServiceEntry};
use crate::metrics::Metrics;
use crate::watcher::{self, Watcher};

/// One healthy mesh instance of an upstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Consul's instance ID (of the sidecar), for logs.
    pub id: String,
    /// `Service.Address`, else `Node.Address`.
    pub host: String,
    pub port: u16,
    /// `Node.Datacenter`: part of the identity the instance must present.
    pub datacenter: String,
    /// The service whose identity the instance must present (`Proxy.DestinationServiceName`,
    /// or the service itself for Connect-native instances).
    pub service: String,
}

impl Endpoint {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Turns a health answer into dialable endpoints (entries without address or port skipped).
pub fn endpoints(entries: &[ServiceEntry], upstream: &str, local_dc: &str) -> Vec<Endpoint> {
    entries
        .iter()
        .filter_map(|e| {
            let host = if e.service.address.is_empty() {
                &e.node.address
            } else {
                &e.service.address
            };
            let port = u16::try_from(e.service.port).ok().filter(|p| *p > 0)?;
            if host.is_empty() {
                return None;
            }
            let native = e.service.connect.as_ref().is_some_and(|c| c.native);
            let service = match &e.service.proxy {
                Some(p) if !native && !p.destination_service_name.is_empty() => {
                    p.destination_service_name.clone()
                }
                _ if native => e.service.service.clone(),
                _ => upstream.to_string(),
            };
            let datacenter = if e.node.datacenter.is_empty() {
                local_dc.to_string()
            } else {
                e.node.datacenter.clone()
            };
            Some(Endpoint {
                id: e.service.id.clone(),
                host: host.clone(),
                port,
                datacenter,
                service,
            })
        })
        .collect()
}

/// The live endpoint list of one upstream and the round-robin position across it.
#[derive(Debug)]
pub struct Balancer {
    endpoints: watch::Receiver<Arc<Vec<Endpoint>>>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(endpoints: watch::Receiver<Arc<Vec<Endpoint>>>) -> Self {
        Balancer {
            endpoints,
            next: AtomicUsize::new(rand::random_range(0..1024)),
        }
    }

    /// Like [`Balancer::candidates`], but while the list is empty waits up to `patience` for
    /// discovery to publish an instance (a server whose sidecar is not `passing` yet, right
    /// after start-up). `waited` is called once if the caller had to wait.
    pub async fn candidates_within(
        &self,
        patience: Duration,
        waited: impl FnOnce(),
    ) -> Vec<Endpoint> {
        let list = self.candidates();
        if !list.is_empty() {
            return list;
        }
        waited();
        let mut endpoints = self.endpoints.clone();
        let _ = tokio::time::timeout(patience, endpoints.wait_for(|list| !list.is_empty())).await;
        self.candidates()
    }

    /// Every current endpoint, starting at the next one in turn: the caller tries them in this
    /// order, so connections spread across instances and a refusing one is skipped.
    pub fn candidates(&self) -> Vec<Endpoint> {
        let list = self.endpoints.borrow().clone();
        if list.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        list.iter()
            .cycle()
            .skip(start)
            .take(list.len())
            .cloned()
            .collect()
    }
}

/// Fetches the first endpoint list (start-up), retrying until `stop` fires.
pub async fn first(
    client: &ConsulClient,
    upstream: &Upstream,
    local_dc: &str,
    metrics: &Metrics,
    retry_max: Duration,
    stop: &CancellationToken,
) -> Option<(Vec<Endpoint>, u64)> {
    let answer = watcher::retry("discovery", metrics, retry_max, stop, || {
        client.health_connect(
            upstream.name.as_str(),
            upstream.datacenter.as_ref().map(|dc| dc.as_str()),
            Blocking::now(),
        )
    })
    .await?;
    let list = endpoints(&answer.body, upstream.name.as_str(), local_dc);
    Some((list, consul::next_index(0, answer.meta.index)))
}

/// Keeps `tx` current for `upstream` until `stop` fires. An empty answer never replaces a
/// non-empty list (see below).
#[allow(clippy::too_many_arguments)] // one watch's whole context; grouping it would only rename it
pub async fn watch(
    client: ConsulClient,
    upstream: Upstream,
    local_dc: String,
    tx: watch::Sender<Arc<Vec<Endpoint>>>,
    mut index: u64,
    metrics: Arc<Metrics>,
    retry_max: Duration,
    stop: CancellationToken,
) {
    let mut w = Watcher::new("discovery", &metrics, retry_max, stop);
    let name = upstream.name.as_str();
    loop {
        let query = |blocking| {
            client.health_connect(
                name,
                upstream.datacenter.as_ref().map(|dc| dc.as_str()),
                blocking,
            )
        };
        let Some(answer) = w.next_change(&mut index, query).await else {
            return;
        };
        let list = endpoints(&answer.body, name, &local_dc);
        if list.is_empty() && !tx.borrow().is_empty() {
            // A restarted agent answers [] until services register again. Keeping the last
            // known instances is safe: a stale address is refused (and the next instance tried)
            // or fails the server identity check; it can never reach the wrong service.
            tracing::info!(
                upstream.service = name,
                kept = tx.borrow().len(),
                "agent lists no instances; keeping the last known ones until it lists some again"
            );
            continue;
        }
        if **tx.borrow() != list {
            tracing::info!(
                upstream.service = name,
                instances = list.len(),
                "upstream instances updated"
            );
            metrics.upstream_instances(name, list.len());
            tx.send_replace(Arc::new(list));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_instances_expect_their_destination_identity() {
        let entries: Vec<ServiceEntry> = serde_json::from_str(include_str!(
            "../tests/data/health-connect-proxy.derived.json"
        ))
        .unwrap();
        let list = endpoints(&entries, "web", "dc1");
        assert_eq!(list.len(), entries.len());
        assert_eq!(list[0].service, "web");
        assert!(list[0].port > 0);
        assert!(!list[0].host.is_empty());
    }

    #[test]
    fn candidates_rotate_across_every_endpoint() {
        let eps: Vec<Endpoint> = (0..3)
            .map(|i| Endpoint {
                id: format!("i{i}"),
                host: "127.0.0.1".into(),
                port: 1000 + i,
                datacenter: "dc1".into(),
                service: "db".into(),
            })
            .collect();
        let (_tx, rx) = watch::channel(Arc::new(eps));
        let b = Balancer::new(rx);
        let firsts: std::collections::HashSet<u16> =
            (0..3).map(|_| b.candidates()[0].port).collect();
        assert_eq!(
            firsts.len(),
            3,
            "three picks in a row start at three different instances"
        );
        let all: std::collections::HashSet<u16> = b.candidates().iter().map(|e| e.port).collect();
        assert_eq!(all.len(), 3, "every instance is a candidate");
    }

    #[test]
    fn address_brackets_ipv6() {
        let e = Endpoint {
            id: String::new(),
            host: "::1".into(),
            port: 1,
            datacenter: String::new(),
            service: String::new(),
        };
        assert_eq!(e.address(), "[::1]:1");
    }
}
