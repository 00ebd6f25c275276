//! Registering the service and its sidecar with the local agent, keeping them registered
//! (an agent that restarts forgets them), and deregistering on stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Settings, Upstream};
use crate::consul::{
    CheckRegistration, ConsulClient, ConsulError, ProxyRegistration, ServiceRegistration,
    UpstreamRegistration,
};
use crate::metrics::Metrics;
use crate::watcher::{self, WatchContext, WatchTask, Watcher};

/// The two registrations this proxy owns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Registration {
    pub service: ServiceRegistration,
    /// `None` when there is no inbound listener and no fixed public port to advertise.
    pub sidecar: Option<ServiceRegistration>,
}

/// Builds both registrations. `public` is the bound inbound listener (None without
/// `--service-port`); `upstreams` pairs each upstream with its bound local address.
pub(crate) fn build(
    settings: &Settings,
    public: Option<SocketAddr>,
    upstreams: &[(Upstream, SocketAddr)],
) -> Registration {
    let mut meta = BTreeMap::new();
    if let Some(pod) = &settings.registration.pod_name {
        meta.insert("pod-name".to_string(), pod.clone());
    }
    if let Some(ns) = &settings.registration.pod_namespace {
        meta.insert("k8s-namespace".to_string(), ns.clone());
    }
    let address = settings.registration.advertise_address.to_string();
    let mut sidecar_meta = meta.clone();
    if settings.tunnel.enabled {
        sidecar_meta.insert(
            crate::tunnel::META_KEY.to_string(),
            crate::tunnel::PROTOCOL.to_string(),
        );
        sidecar_meta.insert(
            crate::tunnel::META_STREAMS_KEY.to_string(),
            settings.tunnel.max_streams.to_string(),
        );
    }
    let service = ServiceRegistration {
        kind: None,
        id: settings.service_id.clone(),
        name: settings.service.to_string(),
        address: Some(address.clone()),
        port: settings.inbound.service_port,
        meta,
        proxy: None,
        checks: Vec::new(),
    };
    // Without an inbound listener the sidecar still advertises the configured public port (its
    // TCP check then fails, so no one is sent there); with port 0 there is nothing to advertise.
    let public_port = public
        .map(|a| a.port())
        .unwrap_or(settings.inbound.listener.port());
    let sidecar = (public_port != 0).then(|| ServiceRegistration {
        kind: Some("connect-proxy".to_string()),
        id: settings.sidecar_id(),
        name: format!("{}-sidecar-proxy", settings.service),
        address: Some(address.clone()),
        port: Some(public_port),
        meta: sidecar_meta,
        proxy: Some(ProxyRegistration {
            destination_service_name: settings.service.to_string(),
            destination_service_id: settings.service_id.clone(),
            local_service_address: settings.inbound.service_address.to_string(),
            local_service_port: settings.inbound.service_port,
            // Consul refuses a registration that lists the same (type, name, datacenter) twice
            // ("upstreams cannot contain duplicates of ..."): the first listener of a service
            // is registered, the others are served all the same.
            upstreams: upstreams
                .iter()
                .enumerate()
                .filter(|(i, (u, _))| {
                    !upstreams[..*i].iter().any(|(o, _)| {
                        o.destination == u.destination
                            && o.name == u.name
                            && o.datacenter == u.datacenter
                    })
                })
                .map(|(_, (u, addr))| UpstreamRegistration {
                    destination_type: u.destination.as_str().to_string(),
                    destination_name: u.name.to_string(),
                    datacenter: u.datacenter.as_ref().map(ToString::to_string),
                    local_bind_address: addr.ip().to_string(),
                    local_bind_port: addr.port(),
                })
                .collect(),
        }),
        checks: vec![
            CheckRegistration {
                name: "Proxy Public Listener".to_string(),
                tcp: Some(
                    SocketAddr::new(settings.registration.advertise_address, public_port)
                        .to_string(),
                ),
                interval: Some("10s".to_string()),
                alias_service: None,
                // The listener is bound before we register: passing is true from the start.
                status: Some(
                    if public.is_some() {
                        "passing"
                    } else {
                        "critical"
                    }
                    .to_string(),
                ),
            },
            CheckRegistration {
                name: "Destination Alias".to_string(),
                tcp: None,
                interval: None,
                alias_service: Some(settings.service_id.clone()),
                // The service is registered without checks just before: its alias is passing.
                status: Some("passing".to_string()),
            },
        ],
    });
    Registration { service, sidecar }
}

impl Registration {
    /// Registers the service, then the sidecar.
    pub(crate) async fn register(
        &self,
        client: &ConsulClient,
        metrics: &Metrics,
    ) -> Result<(), ConsulError> {
        client.register_service(&self.service).await?;
        if let Some(sidecar) = &self.sidecar {
            client.register_service(sidecar).await?;
        }
        metrics.registered();
        tracing::info!(service.id = %self.service.id, sidecar.id = self.sidecar.as_ref().map(|s| s.id.as_str()),
            "registered with the consul agent");
        Ok(())
    }

    /// Deregisters the sidecar, then the service; unknown IDs are fine.
    pub(crate) async fn deregister(&self, client: &ConsulClient) -> Result<(), ConsulError> {
        if let Some(sidecar) = &self.sidecar {
            client.deregister_service(&sidecar.id).await?;
        }
        client.deregister_service(&self.service.id).await?;
        tracing::info!(service.id = %self.service.id, "deregistered from the consul agent");
        Ok(())
    }

    /// Registers both (retrying while the agent fails) and returns the task that keeps them
    /// registered, checking every `interval`; `None` if the context stops first.
    pub(crate) async fn start(&self, ctx: &WatchContext, interval: Duration) -> Option<WatchTask> {
        watcher::retry("registration", ctx, || {
            self.register(&ctx.client, &ctx.metrics)
        })
        .await?;
        let (this, ctx) = (self.clone(), ctx.clone());
        Some(Box::pin(async move { this.keep(&ctx, interval).await }))
    }

    /// Checks every `interval` that both registrations exist and registers again if the agent
    /// lost them (a restarted agent forgets agent-local services).
    async fn keep(&self, ctx: &WatchContext, interval: Duration) {
        let (client, metrics, stop) = (&ctx.client, &ctx.metrics, &ctx.stop);
        let mut w = Watcher::new("registration", ctx);
        let mut agent_back = ctx.link.subscribe();
        let mut retry_now = false;
        loop {
            // Every interval, and at once when a watch finds the agent back after an outage or
            // restarted (it forgot agent-local services); after a failure, once the backoff
            // has passed.
            if !std::mem::take(&mut retry_now) {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                    _ = agent_back.changed() => {}
                }
            }
            agent_back.borrow_and_update();
            let check = async {
                let mut present = client.service_registered(&self.service.id).await?;
                if let Some(sidecar) = &self.sidecar {
                    present = present && client.service_registered(&sidecar.id).await?;
                }
                if !present {
                    tracing::warn!(service.id = %self.service.id, "the agent no longer knows this service: registering again");
                    self.register(client, metrics).await?;
                }
                Ok::<_, ConsulError>(())
            };
            match w.run(check).await {
                None => return,
                Some(Ok(())) => w.succeeded(),
                Some(Err(e)) => {
                    if !w.failed(&e).await {
                        return;
                    }
                    retry_now = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use clap::Parser;

    #[test]
    fn sidecar_registration_carries_the_contracted_fields() {
        let config = Config::parse_from([
            "tandem-proxy",
            "--service",
            "web",
            "--service-port",
            "8080",
            "--service-id",
            "web-1",
            "--advertise-address",
            "10.0.0.7",
            "--upstreams",
            "db:1234:dc2",
        ]);
        let env = |k: &str| match k {
            "POD_NAME" => Some("web-abc".to_string()),
            "POD_NAMESPACE" => Some("team-a".to_string()),
            _ => None,
        };
        let s = config.resolve(&env).unwrap();
        let up = s.outbound.upstreams[0].clone();
        let reg = build(
            &s,
            Some("0.0.0.0:20000".parse().unwrap()),
            &[(up, "127.0.0.1:1234".parse().unwrap())],
        );
        assert_eq!(reg.service.id, "web-1");
        assert_eq!(reg.service.port, Some(8080));
        assert_eq!(reg.service.meta["pod-name"], "web-abc");
        assert_eq!(reg.service.meta["k8s-namespace"], "team-a");
        let v = serde_json::to_value(reg.sidecar.unwrap()).unwrap();
        assert_eq!(v["Kind"], "connect-proxy");
        assert_eq!(v["ID"], "web-1-sidecar-proxy");
        assert_eq!(v["Name"], "web-sidecar-proxy");
        assert_eq!(v["Port"], 20000);
        assert_eq!(v["Address"], "10.0.0.7");
        assert_eq!(v["Proxy"]["DestinationServiceName"], "web");
        assert_eq!(v["Proxy"]["DestinationServiceID"], "web-1");
        assert_eq!(v["Proxy"]["LocalServiceAddress"], "127.0.0.1");
        assert_eq!(v["Proxy"]["LocalServicePort"], 8080);
        assert_eq!(v["Proxy"]["Upstreams"][0]["DestinationName"], "db");
        assert_eq!(v["Proxy"]["Upstreams"][0]["Datacenter"], "dc2");
        assert_eq!(v["Proxy"]["Upstreams"][0]["LocalBindPort"], 1234);
        assert_eq!(v["Checks"][0]["TCP"], "10.0.0.7:20000");
        assert_eq!(v["Checks"][1]["AliasService"], "web-1");
        assert_eq!(v["Meta"]["pod-name"], "web-abc");
    }

    #[test]
    fn only_a_tunnel_proxy_advertises_the_tunnel_and_only_on_its_sidecar() {
        let registration = |extra: &[&str]| {
            let mut args = vec!["tandem-proxy", "--service", "web", "--service-port", "8080"];
            args.extend_from_slice(extra);
            let s = Config::parse_from(args).resolve(&|_| None).unwrap();
            build(&s, Some("0.0.0.0:20000".parse().unwrap()), &[])
        };
        let plain = registration(&[]);
        assert!(!plain.sidecar.unwrap().meta.contains_key("tandem-tunnel"));
        let tunnel = registration(&["--tunnel", "--tunnel-max-streams", "250"]);
        let meta = &tunnel.sidecar.as_ref().unwrap().meta;
        assert_eq!(meta["tandem-tunnel"], "tandem-tunnel/1");
        assert_eq!(meta["tandem-tunnel-max-streams"], "250");
        assert!(!tunnel.service.meta.contains_key("tandem-tunnel"));
    }
}
