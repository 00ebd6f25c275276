//! Upstream discovery: one blocking query per upstream on
//! `/v1/health/connect/<name>?passing[&dc=]`, or a polled `/v1/query/<name>/execute` for a
//! prepared query, published as a list of [`Endpoint`]s that the outbound path reads per
//! connection, plus the spreading of connections across them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Upstream;
use crate::consul::{self, Blocking, QueryExecution, ServiceEntry};
use crate::watcher::{self, WatchContext, Watched, Watcher};
use tandem_contract::Destination;

/// One healthy mesh instance of an upstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
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
    /// The streams per tunnel the instance accepts, when it advertises Tandem's tunnel (its
    /// `tandem-tunnel` meta lists the protocol).
    pub tunnel: Option<u32>,
}

impl Endpoint {
    pub(crate) fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Turns a health answer into dialable endpoints (entries without address or port skipped).
pub(crate) fn endpoints(entries: &[ServiceEntry], upstream: &str, local_dc: &str) -> Vec<Endpoint> {
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
                tunnel: crate::tunnel::advertised(&e.service.meta),
            })
        })
        .collect()
}

/// The live endpoint list of one upstream and the round-robin position across it.
#[derive(Debug)]
pub(crate) struct Balancer {
    endpoints: watch::Receiver<Arc<Vec<Endpoint>>>,
    next: AtomicUsize,
}

impl Balancer {
    pub(crate) fn new(endpoints: watch::Receiver<Arc<Vec<Endpoint>>>) -> Self {
        Balancer {
            endpoints,
            next: AtomicUsize::new(rand::random_range(0..1024)),
        }
    }

    /// Like [`Balancer::candidates`], but while the list is empty waits up to `patience` for
    /// discovery to publish an instance (a server whose sidecar is not `passing` yet, right
    /// after start-up). `waited` is called once if the caller had to wait.
    pub(crate) async fn candidates_within(
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
    pub(crate) fn candidates(&self) -> Vec<Endpoint> {
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

/// What an upstream's instances are found by, as its metrics and logs name it: `db` (a service
/// here), `db?dc=dc2` (in another datacenter, Consul's own notation), `prepared_query:geo-db`.
/// Listeners of the same target share one instance list, so they share the series too.
pub(crate) fn target(upstream: &Upstream) -> String {
    match (upstream.destination, &upstream.datacenter) {
        (Destination::PreparedQuery, _) => format!("prepared_query:{}", upstream.name),
        (Destination::Service, Some(dc)) => format!("{}?dc={dc}", upstream.name),
        (Destination::Service, None) => upstream.name.to_string(),
    }
}

/// What every upstream's discovery shares.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    ctx: WatchContext,
    /// The proxy's own datacenter: the identity of instances whose node names none.
    local_dc: String,
    /// How often a prepared query is executed again (prepared queries do not block).
    query_poll: Duration,
}

/// One upstream's answer: the endpoints and, for a blocking service query, its index.
struct Found {
    endpoints: Vec<Endpoint>,
    index: u64,
}

impl Discovery {
    /// Discovery over `ctx` for a proxy in `local_dc`.
    pub(crate) fn new(ctx: &WatchContext, local_dc: &str, query_poll: Duration) -> Self {
        Discovery {
            ctx: ctx.clone(),
            local_dc: local_dc.to_string(),
            query_poll,
        }
    }

    /// The first endpoint list of `upstream` and the task that keeps it current; `None` once
    /// stopped.
    pub(crate) async fn start(&self, upstream: &Upstream) -> Option<Watched<Vec<Endpoint>>> {
        let found = self.first(upstream).await?;
        self.ctx
            .metrics
            .upstream_instances(&target(upstream), found.endpoints.len());
        let (tx, state) = watch::channel(Arc::new(found.endpoints.clone()));
        let task = Box::pin(self.clone().watch(upstream.clone(), tx, found.index));
        Some(Watched { state, task })
    }

    /// The first endpoint list (start-up), retrying while the agent fails; `None` once stopped.
    /// An unknown target (a datacenter the agent has no path to, as in a failover pair whose
    /// second half is down; a prepared query not created yet) does not hold up start-up: the
    /// upstream starts empty and its watch keeps asking. Other errors (a token without
    /// `service:read`, no leader) are retried.
    async fn first(&self, upstream: &Upstream) -> Option<Found> {
        let target = target(upstream);
        watcher::retry("discovery", &self.ctx, || async {
            match self.fetch(upstream).await {
                Err(e) if e.is_unknown_target() => {
                    tracing::warn!(upstream.service = %target, error = %e,
                        "the agent cannot list this upstream yet; starting without instances");
                    Ok(Found {
                        endpoints: Vec::new(),
                        index: 0,
                    })
                }
                other => other,
            }
        })
        .await
    }

    /// One non-blocking answer for `upstream`.
    async fn fetch(&self, upstream: &Upstream) -> Result<Found, consul::ConsulError> {
        let name = upstream.name.as_str();
        match upstream.destination {
            Destination::Service => {
                let answer = self.health(upstream, Blocking::now()).await?;
                Ok(Found {
                    endpoints: endpoints(&answer.body, name, &self.local_dc),
                    index: consul::next_index(0, answer.meta.index),
                })
            }
            Destination::PreparedQuery => {
                let answer = self.ctx.client.execute_query(name).await?;
                Ok(Found {
                    endpoints: self.query_endpoints(&answer.body, name),
                    index: 0,
                })
            }
        }
    }

    /// Keeps `tx` current for `upstream` until stopped, starting after `index`. An empty
    /// answer never replaces a non-empty list (see below).
    async fn watch(self, upstream: Upstream, tx: watch::Sender<Arc<Vec<Endpoint>>>, index: u64) {
        let mut w = Watcher::new("discovery", &self.ctx);
        let name = upstream.name.as_str();
        let target = target(&upstream);
        let mut index = index;
        loop {
            let list = match upstream.destination {
                Destination::Service => {
                    let query = |blocking| self.health(&upstream, blocking);
                    let Some(answer) = w.next_change(&mut index, query).await else {
                        return;
                    };
                    endpoints(&answer.body, name, &self.local_dc)
                }
                Destination::PreparedQuery => {
                    if w.run(tokio::time::sleep(self.query_poll)).await.is_none() {
                        return;
                    }
                    let query = |_| self.ctx.client.execute_query(name);
                    let Some(answer) = w.next_answer(0, query).await else {
                        return;
                    };
                    self.query_endpoints(&answer.body, name)
                }
            };
            if list.is_empty() && !tx.borrow().is_empty() {
                // A restarted agent answers [] until services register again. Keeping the last
                // known instances is safe: a stale address is refused (and the next instance
                // tried) or fails the server identity check; it can never reach the wrong service.
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
                self.ctx.metrics.upstream_instances(&target, list.len());
                tx.send_replace(Arc::new(list));
            }
        }
    }

    async fn health(
        &self,
        upstream: &Upstream,
        blocking: Blocking,
    ) -> Result<consul::Answer<Vec<ServiceEntry>>, consul::ConsulError> {
        let dc = upstream.datacenter.as_ref().map(|dc| dc.as_str());
        self.ctx
            .client
            .health_connect(upstream.name.as_str(), dc, blocking)
            .await
    }

    /// A query's instances; their datacenter is the answer's (a failover answers from another).
    fn query_endpoints(&self, answer: &QueryExecution, query: &str) -> Vec<Endpoint> {
        let dc = if answer.datacenter.is_empty() {
            &self.local_dc
        } else {
            &answer.datacenter
        };
        let service = if answer.service.is_empty() {
            query
        } else {
            &answer.service
        };
        endpoints(&answer.nodes, service, dc)
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
                tunnel: None,
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
            tunnel: None,
        };
        assert_eq!(e.address(), "[::1]:1");
    }
}
