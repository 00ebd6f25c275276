//! One annotation value (the whole input, as UTF-8) through every parser the injector runs on
//! annotations: `tandem-contract`'s service name, datacenter, port, upstream and upstream-list
//! parsers, the injector's upstream list (with its own extra rules), Go booleans, namespace
//! lists, and a pod carrying the value in each `consul.hashicorp.com/*` annotation.
//!
//! Properties, beyond "never panics":
//! * whatever parses displays as something that parses back to the same value;
//! * what the injector accepts as upstreams, the contract's `UpstreamList` (the proxy's
//!   `--upstreams` parser) accepts as the same list, and the env-var names are distinct, valid
//!   names;
//! * an injected pod's sidecar arguments parse, with the contract's parsers, back to the
//!   settings the annotations gave (the injector -> proxy contract).

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tandem_contract::{parse_port, Datacenter, ServiceName, Upstream, UpstreamList};
use tandem_injector::annotations::{
    self, CONNECT_INJECT, CONNECT_SERVICE, CONNECT_SERVICE_PORT, CONNECT_SERVICE_UPSTREAMS,
};
use tandem_injector::decision::{NamespaceList, Policy};
use tandem_injector::patch::{sidecar_container, SidecarOptions};
use tandem_injector::{Injector, Outcome};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    names(value);
    upstreams(value);
    if let Ok(port) = parse_port(value) {
        assert!(port >= 1);
        assert_eq!(parse_port(&port.to_string()), Ok(port));
    }
    let _ = annotations::parse_bool(value);
    if let Ok(list) = value.parse::<NamespaceList>() {
        assert_eq!(list.to_string().parse::<NamespaceList>(), Ok(list));
    }
    for key in [
        CONNECT_INJECT,
        CONNECT_SERVICE,
        CONNECT_SERVICE_PORT,
        CONNECT_SERVICE_UPSTREAMS,
    ] {
        pod_with(key, value);
    }
});

fn names(value: &str) {
    if let Ok(name) = value.parse::<ServiceName>() {
        assert_eq!(name.as_str(), value);
        assert_eq!(name.to_string().parse::<ServiceName>(), Ok(name.clone()));
        let prefix = annotations::env_prefix(&name);
        assert_eq!(prefix.len(), value.len());
        assert!(prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
    }
    if let Ok(dc) = value.parse::<Datacenter>() {
        assert_eq!(dc.to_string().parse::<Datacenter>(), Ok(dc));
    }
}

fn upstreams(value: &str) {
    if let Ok(upstream) = value.parse::<Upstream>() {
        let shown = upstream.to_string();
        assert_eq!(
            shown.parse::<Upstream>(),
            Ok(upstream),
            "{value:?} displays as {shown:?}"
        );
    }
    let contract = value.parse::<UpstreamList>();
    if let Ok(list) = &contract {
        let shown = list.to_string();
        assert_eq!(
            shown.parse::<UpstreamList>().as_ref(),
            Ok(list),
            "{value:?} displays as {shown:?}"
        );
    }
    for service_port in [None, Some(8080)] {
        let Ok(list) = annotations::parse_upstreams(value, service_port) else {
            continue;
        };
        assert_eq!(
            contract.as_ref().map(|l| &l.0),
            Ok(&list),
            "the injector and the contract read {value:?} differently"
        );
        let prefixes = annotations::env_prefixes(&list);
        assert_eq!(prefixes.len(), list.len());
        let distinct: HashSet<&String> = prefixes.iter().collect();
        assert_eq!(
            distinct.len(),
            prefixes.len(),
            "env names repeat: {prefixes:?}"
        );
        for prefix in &prefixes {
            let first = prefix.bytes().next().expect("a prefix is never empty");
            assert!(!first.is_ascii_digit(), "{prefix}");
            assert!(prefix
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
        }
    }
}

/// A pod that opts in, with `value` in annotation `key`, through the injector; when it is
/// injected, the sidecar's command line must say what the settings say.
fn pod_with(key: &str, value: &str) {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "fuzz",
            "annotations": {CONNECT_INJECT: "true", key: value},
        },
        "spec": {"containers": [
            {"name": "app", "image": "app", "ports": [{"name": "http", "containerPort": 8080}]},
            {"name": "side", "image": "side", "ports": [{"name": "admin", "containerPort": 9090}]},
        ]},
    });
    let options = SidecarOptions {
        proxy_image: "tandem-proxy:fuzz".into(),
        consul_http_addr: None,
        native_sidecar: false,
        tunnel: false,
    };
    let injector = Injector::new(Policy::default(), options.clone());
    let Ok(Outcome::Patched { settings, .. }) = injector.mutate("default", &pod) else {
        return;
    };
    let sidecar = sidecar_container(&settings, &options);
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .expect("the sidecar has args")
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .map(|i| *args.get(i + 1).expect("a flag has a value"))
    };
    let service = flag(tandem_contract::flags::SERVICE).expect("--service is always given");
    assert_eq!(service.parse::<ServiceName>(), Ok(settings.service.clone()));
    let port = flag(tandem_contract::flags::SERVICE_PORT).map(parse_port);
    assert_eq!(port, settings.service_port.map(Ok));
    let upstreams = flag(tandem_contract::flags::UPSTREAMS)
        .map(|u| u.parse::<UpstreamList>())
        .unwrap_or(Ok(UpstreamList::default()));
    assert_eq!(
        upstreams.map(|l| l.0),
        Ok(settings.upstreams.clone()),
        "annotation {key}={value:?}"
    );
}
