//! `Connect.SidecarService`: the expansion Consul does in `agent/sidecar_service.go` and the
//! checks a sidecar gets when it is registered without any.

use std::net::IpAddr;

use super::{decode_definition, RegisterError, Service};
use crate::checks::CheckDefinition;
use crate::json::Fields;

/// Where Consul starts and ends auto-assigned sidecar ports (`sidecar_min_port`/`max_port`).
pub(crate) const SIDECAR_PORTS: std::ops::RangeInclusive<u16> = 21000..=21255;

/// `Connect.SidecarService` before its port is assigned.
#[derive(Clone, Debug)]
pub(crate) struct SidecarRequest {
    pub service: Service,
    pub checks: Vec<CheckDefinition>,
    pub port_given: bool,
}

/// Expands `Connect.SidecarService` as `agent/sidecar_service.go` does (port assigned later).
pub(super) fn expand_sidecar(
    parent: &Service,
    fields: &Fields<'_>,
) -> Result<SidecarRequest, RegisterError> {
    let invalid = |msg: String| RegisterError::bad(format!("Invalid SidecarService: {msg}"));
    let (mut sidecar, checks, nested) = decode_definition(fields)?;
    if nested.is_some() {
        return Err(invalid(
            "sidecar_service can't have a nested sidecar_service".into(),
        ));
    }
    if sidecar.native {
        return Err(invalid(
            "sidecar_service can't have Connect.Native set".into(),
        ));
    }
    let expected_id = format!("{}-sidecar-proxy", parent.id);
    if fields.raw("ID").is_some() && sidecar.id != expected_id {
        return Err(invalid(format!(
            "sidecar_service can't specify an ID other than {expected_id:?}"
        )));
    }
    if !sidecar.kind.is_empty() && sidecar.kind != "connect-proxy" {
        return Err(invalid(
            "sidecar_service can't have Kind other than connect-proxy".into(),
        ));
    }
    sidecar.id = expected_id;
    sidecar.kind = "connect-proxy".to_string();
    if sidecar.name.is_empty() {
        sidecar.name = format!("{}-sidecar-proxy", parent.name);
    }
    if sidecar.tags.is_none() {
        sidecar.tags = parent.tags.clone();
    }
    if sidecar.meta.is_none() {
        sidecar.meta = parent.meta.clone();
    }
    if sidecar.address.is_empty() {
        sidecar.address = parent.address.clone();
    }
    let proxy = &mut sidecar.proxy;
    proxy.destination_service_name = parent.name.clone();
    proxy.destination_service_id = parent.id.clone();
    if proxy.local_service_address.is_empty() && parent.socket_path.is_empty() {
        proxy.local_service_address = "127.0.0.1".to_string();
    }
    if proxy.local_service_port == 0 && parent.socket_path.is_empty() {
        proxy.local_service_port = parent.port;
    }
    if proxy.local_service_socket_path.is_empty() {
        proxy.local_service_socket_path = parent.socket_path.clone();
    }
    let port_given = sidecar.port != 0;
    Ok(SidecarRequest {
        service: sidecar,
        checks,
        port_given,
    })
}

/// The checks Consul adds to a sidecar registered without any: TCP on the proxy port and an
/// alias of the parent service.
pub(crate) fn default_sidecar_checks(sidecar: &Service, parent: &Service) -> Vec<CheckDefinition> {
    let host = if sidecar.address.is_empty() {
        sidecar.proxy.local_service_address.clone()
    } else {
        sidecar.address.clone()
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let tcp_target = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", sidecar.port),
        _ => format!("{host}:{}", sidecar.port),
    };
    vec![
        CheckDefinition {
            name: "Connect Sidecar Listening".to_string(),
            tcp: tcp_target,
            interval: Some(std::time::Duration::from_secs(10)),
            ..CheckDefinition::default()
        },
        CheckDefinition {
            name: format!("Connect Sidecar Aliasing {}", parent.id),
            alias_service: parent.id.clone(),
            ..CheckDefinition::default()
        },
    ]
}
