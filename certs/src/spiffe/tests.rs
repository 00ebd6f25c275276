//! Parse/display of every Consul SPIFFE form, bad inputs, matching and SNI.

use super::*;

const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

fn td() -> TrustDomain {
    TD.parse().unwrap()
}

#[test]
fn service_round_trip() {
    let s = format!("spiffe://{TD}/ns/default/dc/dc1/svc/web");
    let id: SpiffeId = s.parse().unwrap();
    assert_eq!(
        id,
        SpiffeId::Service(ServiceId::new(td(), "dc1", "web")),
        "parsed {s}"
    );
    assert_eq!(id.to_string(), s);
    assert_eq!(ServiceId::new(td(), "dc1", "web").to_string(), s);
}

#[test]
fn partition_form_round_trips() {
    let s = format!("spiffe://{TD}/ap/team-a/ns/billing/dc/dc2/svc/db");
    let id: ServiceId = s.parse().unwrap();
    assert_eq!(id.partition.as_deref(), Some("team-a"));
    assert_eq!(id.namespace, "billing");
    assert_eq!(id.datacenter, "dc2");
    assert_eq!(id.service, "db");
    assert_eq!(id.to_string(), s);
}

#[test]
fn agent_server_gateway_and_ca_forms() {
    let cases = [
        format!("spiffe://{TD}/agent/client/dc/dc1/id/node-1"),
        format!("spiffe://{TD}/ap/p1/agent/client/dc/dc1/id/node-1"),
        format!("spiffe://{TD}/agent/server/dc/dc1"),
        format!("spiffe://{TD}/gateway/mesh/dc/dc1"),
        format!("spiffe://{TD}/ap/p1/gateway/mesh/dc/dc1"),
        format!("spiffe://{TD}"),
    ];
    for s in &cases {
        let id: SpiffeId = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(&id.to_string(), s);
        assert_eq!(id.trust_domain(), &td());
        assert!(id.as_service().is_none(), "{s} is not a service");
    }
    assert_eq!(
        cases[0].parse::<SpiffeId>().unwrap(),
        SpiffeId::Agent {
            trust_domain: td(),
            partition: None,
            datacenter: "dc1".into(),
            node: "node-1".into()
        }
    );
    assert_eq!(cases[5].parse::<SpiffeId>().unwrap(), SpiffeId::Ca(td()));
}

#[test]
fn percent_encoding_is_decoded_and_re_encoded() {
    let s = format!("spiffe://{TD}/ns/default/dc/dc1/svc/we%2Fb%20x");
    let id: ServiceId = s.parse().unwrap();
    assert_eq!(id.service, "we/b x");
    assert_eq!(id.to_string(), s);
    let lower = format!("spiffe://{TD}/ns/default/dc/dc1/svc/a%3ab");
    assert_eq!(lower.parse::<ServiceId>().unwrap().service, "a:b");
}

/// Found by `fuzz/` (certs_spiffe_id): `%+2` decoded as 0x02 because the two characters after
/// `%` went to `u8::from_str_radix`, which takes a sign. Go's `url.PathUnescape` (what Consul
/// parses with) refuses it.
#[test]
fn a_percent_escape_is_two_hex_digits_and_no_sign() {
    let crash = "spiffe://23333-4444-555555555555.consul/ns/de20xfault/dc/dc1/svc/we%+2Fbe%2Fb%20x";
    assert!(matches!(
        crash.parse::<SpiffeId>().unwrap_err(),
        SpiffeError::BadEncoding {
            field: "service",
            ..
        }
    ));
    for escape in ["%+f", "%-1", "%+0", "% f"] {
        let s = format!("spiffe://{TD}/ns/default/dc/dc1/svc/a{escape}b");
        assert!(s.parse::<SpiffeId>().is_err(), "{s}");
    }
}

#[test]
fn scheme_and_host_are_case_folded() {
    let id: ServiceId = "SPIFFE://ABC.Consul/ns/default/dc/dc1/svc/Web"
        .parse()
        .unwrap();
    assert_eq!(id.trust_domain.as_str(), "abc.consul");
    assert_eq!(id.service, "Web", "path keeps its case");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let bad = |s: &str| s.parse::<SpiffeId>().unwrap_err();
    assert!(matches!(bad("web"), SpiffeError::NotAUri(_)));
    assert!(matches!(
        bad("https://x.consul/ns/default/dc/dc1/svc/web"),
        SpiffeError::WrongScheme(_)
    ));
    assert!(matches!(
        bad("spiffe:///ns/default/dc/dc1/svc/web"),
        SpiffeError::InvalidTrustDomain(_)
    ));
    assert!(matches!(
        bad("spiffe://x:8500/ns/default/dc/dc1/svc/web"),
        SpiffeError::InvalidTrustDomain(_)
    ));
    for path in [
        "/",
        "/ns/default/dc/dc1",
        "/ns/default/dc/dc1/svc/",
        "/ns/default/dc/dc1/svc/web/extra",
        "/ns//dc/dc1/svc/web",
        "/svc/web",
        "/ap/p1/agent/server/dc/dc1",
        "/ap/ns/default/dc/dc1/svc/web",
    ] {
        let s = format!("spiffe://{TD}{path}");
        assert!(
            matches!(bad(&s), SpiffeError::UnexpectedFormat(_)),
            "{s} should be rejected as a bad format"
        );
    }
    assert!(matches!(
        bad(&format!("spiffe://{TD}/ns/default/dc/dc1/svc/web?x=1")),
        SpiffeError::QueryOrFragment(_)
    ));
    for svc in ["we%zzb", "web%2", "%ff%fe"] {
        let s = format!("spiffe://{TD}/ns/default/dc/dc1/svc/{svc}");
        assert!(
            matches!(
                bad(&s),
                SpiffeError::BadEncoding {
                    field: "service",
                    ..
                }
            ),
            "{s}"
        );
    }
    let agent = format!("spiffe://{TD}/agent/server/dc/dc1");
    assert!(matches!(
        agent.parse::<ServiceId>().unwrap_err(),
        SpiffeError::NotAService(_)
    ));
    assert!(
        bad("web").to_string().contains("\"web\""),
        "error names the input"
    );
}

#[test]
fn trust_domain_rules() {
    assert_eq!(
        TrustDomain::from_cluster_id("ABCD-ef").unwrap().as_str(),
        "abcd-ef.consul"
    );
    assert!("".parse::<TrustDomain>().is_err());
    assert!("a b".parse::<TrustDomain>().is_err());
    assert!("a/b".parse::<TrustDomain>().is_err());
}

#[test]
fn matches_path_ignores_case_and_trust_domain() {
    let a = ServiceId::new(td(), "dc1", "web");
    let mut b = ServiceId::new("other.consul".parse().unwrap(), "DC1", "WEB");
    assert!(a.matches_path(&b));
    b.namespace = "Default".into();
    b.partition = Some("DEFAULT".into());
    assert!(a.matches_path(&b), "absent partition is 'default'");
    assert!(!a.matches_path(&ServiceId::new(td(), "dc1", "api")));
    assert!(!a.matches_path(&ServiceId::new(td(), "dc2", "web")));
    let mut ns = ServiceId::new(td(), "dc1", "web");
    ns.namespace = "team".into();
    assert!(!a.matches_path(&ns));
    let mut ap = ServiceId::new(td(), "dc1", "web");
    ap.partition = Some("p1".into());
    assert!(!a.matches_path(&ap));
}

#[test]
fn sni() {
    assert_eq!(
        ServiceId::new(td(), "dc1", "db").sni(),
        format!("db.default.dc1.internal.{TD}")
    );
    let mut ap = ServiceId::new(td(), "dc1", "db");
    ap.partition = Some("p1".into());
    assert_eq!(ap.sni(), format!("db.default.p1.dc1.internal-v1.{TD}"));
}
