//! The built-in CA as Consul's agent and servers present it: the roots (active and rotated-out),
//! the CA configuration, and the agent's leaf cache (issue on first request, re-issue on root
//! rotation or when a leaf enters its renewal window).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde_json::{Map, Value};
use tandem_certs::{CaError, CertificateAuthority, IssuedLeaf, RootInfo, ServiceId, TrustDomain};

use crate::json::{DecodeError, Fields};
use crate::state::{Settings, Txn};

/// Consul's built-in provider defaults, echoed by `GET /v1/connect/ca/configuration`.
const INTERMEDIATE_CERT_TTL: &str = "8760h";
const MIN_LEAF_TTL: Duration = Duration::from_secs(3600);
const MAX_LEAF_TTL: Duration = Duration::from_secs(8760 * 3600);

#[derive(Debug, thiserror::Error)]
pub(crate) enum CaSetupError {
    #[error("cannot derive the trust domain from cluster id {cluster_id}: {source}")]
    TrustDomain {
        cluster_id: String,
        source: tandem_certs::SpiffeError,
    },
    #[error("cannot generate the CA root: {0}")]
    Root(#[from] CaError),
}

/// A CA request refused: status code and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CaRequestError {
    pub status: u16,
    pub message: String,
}

impl From<DecodeError> for CaRequestError {
    fn from(e: DecodeError) -> Self {
        CaRequestError {
            status: 400,
            message: format!("Request decode failed: {e}"),
        }
    }
}

impl From<CaError> for CaRequestError {
    fn from(e: CaError) -> Self {
        CaRequestError {
            status: 500,
            message: e.to_string(),
        }
    }
}

pub(crate) struct Root {
    pub authority: Arc<CertificateAuthority>,
    pub active: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Root {
    pub(crate) fn info(&self) -> &RootInfo {
        self.authority.root()
    }
}

/// A leaf in the agent's cache.
#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub issued: IssuedLeaf,
    pub service: String,
    pub service_uri: String,
    /// `RootInfo::id` of the root that signed it.
    pub root_id: String,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the agent replaces it: a random point in 60-90 % of its lifetime, as Consul does.
    pub renew_at: SystemTime,
}

pub(crate) struct Ca {
    trust_domain: TrustDomain,
    cluster_id: String,
    datacenter: String,
    roots: Vec<Root>,
    roots_index: u64,
    leaf_ttl: Duration,
    /// The provider `Config` as last PUT, echoed back as Consul 1.10 does (sorted, no
    /// defaults filled in); at start the dev defaults.
    config: Map<String, Value>,
    config_create_index: u64,
    config_modify_index: u64,
    leaves: HashMap<String, Leaf>,
}

/// Whether a leaf came from the cache (`X-Cache: HIT`) or was just issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheResult {
    Hit,
    Miss,
}

impl Ca {
    pub(crate) fn new(settings: &Settings, tx: &mut Txn) -> Result<Self, CaSetupError> {
        let cluster_id = uuid::Uuid::new_v4().to_string();
        let trust_domain = TrustDomain::from_cluster_id(&cluster_id).map_err(|source| {
            CaSetupError::TrustDomain {
                cluster_id: cluster_id.clone(),
                source,
            }
        })?;
        let authority = CertificateAuthority::generate(&trust_domain, &cluster_id)?;
        let index = tx.index();
        Ok(Ca {
            trust_domain,
            cluster_id,
            datacenter: settings.datacenter.clone(),
            roots: vec![Root {
                authority: Arc::new(authority),
                active: true,
                create_index: index,
                modify_index: index,
            }],
            roots_index: index,
            leaf_ttl: settings.leaf_ttl,
            config: [
                ("IntermediateCertTTL", INTERMEDIATE_CERT_TTL.to_string()),
                ("LeafCertTTL", ttl_text(settings.leaf_ttl)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect(),
            config_create_index: index,
            config_modify_index: index,
            leaves: HashMap::new(),
        })
    }

    pub(crate) fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The cluster UUID (`ExternalTrustDomain` in roots).
    pub(crate) fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub(crate) fn roots_index(&self) -> u64 {
        self.roots_index
    }

    /// Roots ordered by ID, as Consul's state store returns them.
    pub(crate) fn roots(&self) -> Vec<&Root> {
        let mut roots: Vec<&Root> = self.roots.iter().collect();
        roots.sort_by(|a, b| a.info().id.cmp(&b.info().id));
        roots
    }

    pub(crate) fn active_root(&self) -> &Root {
        self.roots
            .iter()
            .find(|r| r.active)
            .unwrap_or_else(|| &self.roots[self.roots.len() - 1])
    }

    pub(crate) fn config_indexes(&self) -> (u64, u64) {
        (self.config_create_index, self.config_modify_index)
    }

    /// The provider `Config` map as Consul shows it (keys sorted, as Go prints maps).
    pub(crate) fn config_map(&self) -> Value {
        crate::json::sorted(&Value::Object(self.config.clone()))
    }

    /// The cached leaf for `service` if still good; otherwise issues a new one.
    pub(crate) fn leaf(
        &mut self,
        service: &str,
        tx: &mut Txn,
    ) -> Result<(Leaf, CacheResult), CaError> {
        let active_id = self.active_root().info().id.clone();
        if let Some(leaf) = self.leaves.get(service) {
            if leaf.root_id == active_id && SystemTime::now() < leaf.renew_at {
                return Ok((leaf.clone(), CacheResult::Hit));
            }
        }
        let leaf = self.issue(service, tx)?;
        Ok((leaf, CacheResult::Miss))
    }

    /// Drops the agent's leaf cache (an agent restart).
    pub(crate) fn forget_leaves(&mut self) {
        self.leaves.clear();
    }

    /// `PUT /v1/connect/ca/configuration`: applies the config and rotates to a new root; the old
    /// roots stay listed (inactive) and every cached leaf is re-issued by the new root.
    pub(crate) fn reconfigure(&mut self, body: &Value, tx: &mut Txn) -> Result<(), CaRequestError> {
        let fields = Fields::new(body, "CAConfiguration")?;
        let provider = fields.string_or_default("Provider")?;
        if provider != "consul" {
            return Err(CaRequestError {
                status: 400,
                message: format!(
                    "tandem-agent dev only runs the built-in \"consul\" CA provider, not {provider:?}"
                ),
            });
        }
        let mut leaf_ttl = self.leaf_ttl;
        let mut config_map = Map::new();
        if let Some(config) = fields.object("Config", "map[string]interface {}")? {
            if let Some(ttl) = config.duration("LeafCertTTL")? {
                if ttl < MIN_LEAF_TTL {
                    return Err(CaRequestError {
                        status: 400,
                        message: "leaf cert TTL must be greater or equal than 1h0m0s".into(),
                    });
                }
                if ttl > MAX_LEAF_TTL {
                    return Err(CaRequestError {
                        status: 400,
                        message: "leaf cert TTL must be less than 8760h0m0s".into(),
                    });
                }
                leaf_ttl = ttl;
            }
            if let Some(Value::Object(map)) = body
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("config")))
                .map(|(_, v)| v)
            {
                config_map = map.clone();
            }
        }
        let next = self.active_root().authority.rotate()?;
        let index = tx.index();
        for root in &mut self.roots {
            if root.active {
                root.active = false;
                root.modify_index = index;
            }
        }
        self.roots.push(Root {
            authority: Arc::new(next),
            active: true,
            create_index: index,
            modify_index: index,
        });
        self.roots_index = index;
        self.leaf_ttl = leaf_ttl;
        self.config = config_map;
        self.config_modify_index = index;
        let services: Vec<String> = self.leaves.keys().cloned().collect();
        for service in services {
            self.issue(&service, tx)?;
        }
        Ok(())
    }

    fn issue(&mut self, service: &str, tx: &mut Txn) -> Result<Leaf, CaError> {
        let id = ServiceId::new(self.trust_domain.clone(), &self.datacenter, service);
        let root = self.active_root();
        let root_id = root.info().id.clone();
        // Consul backdates NotBefore by a minute and ends the leaf TTL after NotBefore. Below
        // Consul's 1h minimum (short test TTLs) that would hand out expired leaves, so there the
        // TTL counts from now.
        let ttl = if self.leaf_ttl < MIN_LEAF_TTL {
            self.leaf_ttl + tandem_certs::ca::LEAF_BACKDATE
        } else {
            self.leaf_ttl
        };
        let issued_at = SystemTime::now();
        let issued = root.authority.issue_leaf(&id, ttl)?;
        let index = tx.index();
        // Renew at a random point in 60-90 % of the remaining lifetime, as Consul's agent does.
        let lifetime = issued
            .valid_before
            .duration_since(issued_at)
            .unwrap_or(Duration::ZERO);
        let fraction = rand::rng().random_range(0.6..0.9);
        let renew_at = issued_at + lifetime.mul_f64(fraction);
        let leaf = Leaf {
            issued,
            service: service.to_string(),
            service_uri: id.to_string(),
            root_id,
            create_index: index,
            modify_index: index,
            renew_at,
        };
        self.leaves.insert(service.to_string(), leaf.clone());
        Ok(leaf)
    }
}

/// `72h` rather than Go's `72h0m0s` for whole hours, as Consul's config echoes what was set.
fn ttl_text(ttl: Duration) -> String {
    if ttl.as_secs().is_multiple_of(3600) && ttl.subsec_nanos() == 0 && !ttl.is_zero() {
        format!("{}h", ttl.as_secs() / 3600)
    } else {
        crate::godur::format(ttl)
    }
}
