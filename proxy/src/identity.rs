//! The proxy's TLS identity: CA roots and its leaf certificate, each kept current by a blocking
//! query, combined into a [`TlsState`] published through a `tokio::sync::watch`. The accept
//! and connect paths take the current state per connection, so a rotation never restarts a
//! listener and never touches an open connection. A failed renewal keeps the valid leaf.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::{ClientConfig, ServerConfig};
use tandem_certs::spiffe::{ServiceId, TrustDomain};
use tandem_certs::tls::{self, Identity, TrustRoots};
use tokio::sync::watch;

use crate::consul::{self, Blocking, CaRoots, ConsulError, LeafCert};
use crate::watcher::{WatchContext, WatchError, Watched, Watcher};

/// What a client config is for: the expected identity's datacenter and service (lower case),
/// whether it offers the tunnel, and the instance's address.
type ClientKey = (String, String, bool, String);

/// How many client configs a [`TlsState`] keeps; past it the least recently used one is dropped
/// for each new one (its instance's next handshake is a full one). Each holds one server name's
/// sessions: at most 8 tickets of a few kB.
const MAX_CLIENT_CONFIGS: usize = 256;

/// The client configs of a [`TlsState`] (`C`: a config), each with when it was last used.
struct ClientConfigs<C = Arc<ClientConfig>> {
    configs: HashMap<ClientKey, (C, u64)>,
    /// Counts uses: the larger, the more recent.
    clock: u64,
}

impl<C> Default for ClientConfigs<C> {
    fn default() -> Self {
        Self {
            configs: HashMap::new(),
            clock: 0,
        }
    }
}

impl<C: Clone> ClientConfigs<C> {
    fn get(&mut self, key: &ClientKey) -> Option<C> {
        self.clock += 1;
        let (config, used) = self.configs.get_mut(key)?;
        *used = self.clock;
        Some(config.clone())
    }

    /// Adds `config`, first dropping the least recently used one when full.
    fn insert(&mut self, key: ClientKey, config: C) {
        if self.configs.len() >= MAX_CLIENT_CONFIGS && !self.configs.contains_key(&key) {
            let oldest = self
                .configs
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.configs.remove(&oldest);
            }
        }
        self.clock += 1;
        self.configs.insert(key, (config, self.clock));
    }
}

/// Everything a connection needs from the current credentials.
pub struct TlsState {
    /// Config for the public listener (requires a mesh client certificate).
    pub server: Arc<ServerConfig>,
    /// The same, selecting the tunnel's ALPN protocol: used for a caller that offers it.
    pub(crate) tunnel_server: Arc<ServerConfig>,
    identity: Identity,
    roots: TrustRoots,
    /// Client configs per instance dialed, built on first use (at most
    /// [`MAX_CLIENT_CONFIGS`]).
    clients: Mutex<ClientConfigs>,
    /// Our own service identity (from the leaf).
    pub local: Option<ServiceId>,
    /// The leaf's serial number, for logs.
    pub leaf_serial: String,
    /// When the leaf expires.
    pub leaf_not_after: SystemTime,
    /// Whether client configs resume sessions (the server configs are built to match).
    resumption: bool,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("local", &self.local.as_ref().map(|id| id.to_string()))
            .field("leaf_serial", &self.leaf_serial)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// Credentials from an identity and the roots to trust (start-up builds it from the agent's
    /// answers; tests and the bench from a test PKI).
    pub fn new(identity: Identity, roots: TrustRoots) -> Result<Self, tls::TlsError> {
        let serial = tls::leaf_info(identity.cert_chain()[0].as_ref())
            .map(|i| i.serial_number)
            .unwrap_or_default();
        let server = tls::server_config(&identity, &roots)?;
        // A clone shares the session cache and ticketer: a resumption works on either.
        let mut tunnel_server = (*server).clone();
        tunnel_server.alpn_protocols = vec![crate::tunnel::PROTOCOL.as_bytes().to_vec()];
        Ok(TlsState {
            server,
            tunnel_server: Arc::new(tunnel_server),
            local: identity.service_id().cloned(),
            leaf_not_after: identity.not_after(),
            identity,
            roots,
            clients: Mutex::new(ClientConfigs::default()),
            leaf_serial: serial,
            resumption: true,
        })
    }

    /// The same with every handshake a full one (`--tls-resumption=false`): the server keeps
    /// no sessions and sends no tickets, the clients offer none.
    pub fn without_resumption(mut self) -> Self {
        let full_only = |config: &Arc<ServerConfig>| {
            let mut config = (**config).clone();
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
            Arc::new(config)
        };
        self.server = full_only(&self.server);
        self.tunnel_server = full_only(&self.tunnel_server);
        self.resumption = false;
        self
    }

    fn build(leaf: &LeafParts, roots: &RootParts, resumption: bool) -> Result<Self, tls::TlsError> {
        let mut state = Self::new(leaf.identity.clone(), roots.roots.clone())?;
        state.leaf_serial = leaf.serial.clone();
        Ok(if resumption {
            state
        } else {
            state.without_resumption()
        })
    }

    /// The trust domain of the roots.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.roots.trust_domain()
    }

    /// The identity an instance of `service` in `datacenter` must present.
    pub fn expected(&self, datacenter: &str, service: &str) -> ServiceId {
        ServiceId::new(self.trust_domain().clone(), datacenter, service)
    }

    /// A client config for dialing the instance at `instance` (its address), which presents
    /// our leaf and accepts only `expected`.
    ///
    /// Each instance has a config of its own because each has a session cache of its own:
    /// rustls keys sessions by server name, which is the service's SNI for every instance of
    /// it, and a ticket resumes only at the instance that issued it. With one cache per
    /// service, round-robin would offer every instance the previous instance's ticket.
    pub fn client_for(
        &self,
        expected: &ServiceId,
        instance: &str,
    ) -> Result<Arc<ClientConfig>, tls::TlsError> {
        self.client(expected, instance, false)
    }

    /// The same, offering the tunnel's ALPN protocol.
    pub(crate) fn tunnel_client_for(
        &self,
        expected: &ServiceId,
        instance: &str,
    ) -> Result<Arc<ClientConfig>, tls::TlsError> {
        self.client(expected, instance, true)
    }

    fn client(
        &self,
        expected: &ServiceId,
        instance: &str,
        tunnel: bool,
    ) -> Result<Arc<ClientConfig>, tls::TlsError> {
        let key = (
            expected.datacenter.to_ascii_lowercase(),
            expected.service.to_ascii_lowercase(),
            tunnel,
            instance.to_string(),
        );
        let mut cache = self
            .clients
            .lock()
            .expect("client config cache lock is never poisoned");
        if let Some(c) = cache.get(&key) {
            return Ok(c);
        }
        let mut config = (*tls::client_config(&self.identity, &self.roots, expected)?).clone();
        if tunnel {
            config.alpn_protocols = vec![crate::tunnel::PROTOCOL.as_bytes().to_vec()];
        }
        config.resumption = if self.resumption {
            // One server name (the SNI) is all this instance's cache ever holds.
            let sessions = rustls::client::ClientSessionMemoryCache::new(1);
            rustls::client::Resumption::store(Arc::new(sessions))
        } else {
            rustls::client::Resumption::disabled()
        };
        let config = Arc::new(config);
        cache.insert(key, config.clone());
        Ok(config)
    }
}

/// How long a leaf signed by a newly listed root waits before it is presented, so that every
/// peer has learned the new root first (Consul spreads the same over 0-30 s on the agent side;
/// the old leaf stays valid meanwhile because the old root stays listed).
const NEW_ROOT_GRACE: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct LeafParts {
    identity: Identity,
    /// The certificate as the agent sent it: what tells one leaf from another (a serial alone
    /// does not: a restarted Consul's new CA numbers its leaves from the start again).
    cert_pem: String,
    serial: String,
    not_before: SystemTime,
    /// Colon-hex key ID of the signing CA (matches a root's `SigningKeyID`).
    authority_key_id: Option<String>,
    index: u64,
}

#[derive(Clone)]
struct RootParts {
    roots: TrustRoots,
    ids: Vec<String>,
    signing_keys: Vec<String>,
    index: u64,
}

/// Why an answer from the agent could not be used (the previous state is kept).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("roots answer has no TrustDomain")]
    NoTrustDomain,
    #[error("roots answer has no roots")]
    NoRoots,
    #[error("invalid trust domain {0:?}: {1}")]
    TrustDomain(String, String),
    #[error("unusable roots: {0}")]
    Roots(tls::TlsError),
    #[error("unusable leaf certificate: {0}")]
    Leaf(tls::TlsError),
    #[error("cannot build TLS configs: {0}")]
    Config(tls::TlsError),
    #[error("the leaf names {0}, not a service")]
    LeafNotAService(String),
    #[error("the leaf is for {found}, not {expected}")]
    LeafForOtherService { found: String, expected: String },
    #[error("the leaf does not verify against the trusted roots: {0}")]
    LeafUntrusted(String),
}

/// Whether `leaf` may be presented as `service`: it names that service in the roots' trust
/// domain (in the namespace, partition and datacenter of `current`, the leaf presented now, if
/// any) and chains to one of the roots. An agent answering with another service's leaf, or one
/// from a CA the proxy does not trust, is refused and the current leaf kept.
fn check_leaf(
    leaf: &LeafParts,
    roots: &RootParts,
    service: &str,
    current: Option<&ServiceId>,
) -> Result<(), IdentityError> {
    use rustls::server::danger::ClientCertVerifier;
    let named = leaf
        .identity
        .spiffe_id()
        .map_or_else(|| "no SPIFFE ID".to_string(), |id| id.to_string());
    let id = leaf
        .identity
        .service_id()
        .ok_or(IdentityError::LeafNotAService(named))?;
    let same_place = current.is_none_or(|c| {
        c.namespace.eq_ignore_ascii_case(&id.namespace)
            && c.datacenter.eq_ignore_ascii_case(&id.datacenter)
            && c.partition.as_deref().map(str::to_ascii_lowercase)
                == id.partition.as_deref().map(str::to_ascii_lowercase)
    });
    if !id.service.eq_ignore_ascii_case(service) || !same_place {
        return Err(IdentityError::LeafForOtherService {
            found: id.to_string(),
            expected: current.map_or_else(|| service.to_string(), |c| c.to_string()),
        });
    }
    let verifier = tls::SpiffeClientVerifier::new(&roots.roots).map_err(IdentityError::Roots)?;
    let chain = leaf.identity.cert_chain();
    let now = rustls::pki_types::UnixTime::now();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], now)
        .map(|_| ())
        .map_err(|e| IdentityError::LeafUntrusted(e.to_string()))
}

fn roots_from(answer: &CaRoots, index: u64) -> Result<RootParts, IdentityError> {
    if answer.trust_domain.is_empty() {
        return Err(IdentityError::NoTrustDomain);
    }
    let td = TrustDomain::from_str(&answer.trust_domain.to_ascii_lowercase())
        .map_err(|e| IdentityError::TrustDomain(answer.trust_domain.clone(), e.to_string()))?;
    let list = answer.roots.as_deref().unwrap_or_default();
    if list.is_empty() {
        return Err(IdentityError::NoRoots);
    }
    let roots = TrustRoots::from_pems(list.iter().map(|r| r.root_cert.as_str()), td)
        .map_err(IdentityError::Roots)?;
    Ok(RootParts {
        roots,
        ids: list.iter().map(|r| r.id.clone()).collect(),
        signing_keys: list
            .iter()
            .map(|r| r.signing_key_id.to_ascii_lowercase())
            .collect(),
        index,
    })
}

fn leaf_from(answer: &LeafCert, index: u64) -> Result<LeafParts, IdentityError> {
    let identity = Identity::from_pem(&answer.cert_pem, &answer.private_key_pem)
        .map_err(IdentityError::Leaf)?;
    let info = tls::leaf_info(answer.cert_pem.as_bytes()).map_err(IdentityError::Leaf)?;
    Ok(LeafParts {
        identity,
        cert_pem: answer.cert_pem.clone(),
        serial: info.serial_number,
        not_before: info.not_before,
        authority_key_id: info.authority_key_id.map(|k| k.to_ascii_lowercase()),
        index,
    })
}

/// Fetches roots and leaf (retrying with backoff), builds the first [`TlsState`] and returns
/// it with the task that follows both (`None` if the context stops first).
pub(crate) async fn start(
    ctx: &WatchContext,
    service: &str,
    resumption: bool,
) -> Option<Watched<TlsState>> {
    let identity = IdentityWatch::first(ctx.clone(), service.to_string(), resumption).await?;
    let state = identity.tx.subscribe();
    let roots = identity.clone();
    let task = Box::pin(async move {
        tokio::join!(roots.watch_roots(), identity.watch_leaf());
    });
    Some(Watched { state, task })
}

/// For `fuzz/`: the roots step alone.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_roots(answer: &CaRoots) -> Result<(), String> {
    roots_from(answer, 1).map(drop).map_err(|e| e.to_string())
}

/// For `fuzz/`: the checks and the build a new leaf goes through before it is presented. A
/// state that builds must name `service`.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_tls_state(
    leaf: &LeafCert,
    roots: &CaRoots,
    service: &str,
) -> Result<(), String> {
    let roots = roots_from(roots, 1).map_err(|e| e.to_string())?;
    let leaf = leaf_from(leaf, 1).map_err(|e| e.to_string())?;
    check_leaf(&leaf, &roots, service, None).map_err(|e| e.to_string())?;
    let state = TlsState::build(&leaf, &roots, true).map_err(|e| e.to_string())?;
    let named = state
        .local
        .as_ref()
        .map(|id| id.service.to_ascii_lowercase());
    assert_eq!(
        named.as_deref(),
        Some(service.to_ascii_lowercase().as_str()),
        "a state that passed the checks presents another service"
    );
    Ok(())
}

/// Owns the two watches and the published state.
struct IdentityWatch {
    ctx: WatchContext,
    service: String,
    /// `--tls-resumption`.
    resumption: bool,
    parts: Mutex<(LeafParts, RootParts)>,
    /// When each root signing key was first listed (roots known at start-up count as old).
    first_seen: Mutex<HashMap<String, Instant>>,
    tx: watch::Sender<Arc<TlsState>>,
}

impl IdentityWatch {
    async fn first(
        ctx: WatchContext,
        service: String,
        resumption: bool,
    ) -> Option<Arc<IdentityWatch>> {
        let mut w = Watcher::new("identity", &ctx);
        let client = &ctx.client;
        let metrics = &ctx.metrics;
        loop {
            let attempt = async {
                let roots = client
                    .ca_roots(Blocking::now())
                    .await
                    .map_err(Failure::Consul)?;
                let roots = roots_from(&roots.body, consul::next_index(0, roots.meta.index))
                    .map_err(Failure::Unusable)?;
                let leaf = client
                    .leaf(&service, Blocking::now())
                    .await
                    .map_err(Failure::Consul)?;
                let leaf = leaf_from(&leaf.body, leaf.meta.index).map_err(Failure::Unusable)?;
                check_leaf(&leaf, &roots, &service, None).map_err(Failure::Unusable)?;
                let state = TlsState::build(&leaf, &roots, resumption)
                    .map_err(|e| Failure::Unusable(IdentityError::Config(e)))?;
                Ok::<_, Failure>((leaf, roots, state))
            };
            match w.run(attempt).await? {
                Ok((leaf, roots, state)) => {
                    w.succeeded();
                    metrics.certificate_expires(state.leaf_not_after);
                    metrics.trust_roots(roots.ids.len());
                    tracing::info!(leaf.serial = %state.leaf_serial, leaf.not_after = %humantime::format_rfc3339_seconds(state.leaf_not_after),
                        roots = roots.ids.len(), trust_domain = %roots.roots.trust_domain(), "certificates loaded");
                    let (tx, _) = watch::channel(Arc::new(state));
                    let long_ago = Instant::now()
                        .checked_sub(NEW_ROOT_GRACE)
                        .unwrap_or_else(Instant::now);
                    let first_seen = roots
                        .signing_keys
                        .iter()
                        .map(|k| (k.clone(), long_ago))
                        .collect();
                    drop(w);
                    return Some(Arc::new(IdentityWatch {
                        first_seen: Mutex::new(first_seen),
                        ctx,
                        service,
                        resumption,
                        parts: Mutex::new((leaf, roots)),
                        tx,
                    }));
                }
                Err(e) => {
                    if !w.failed(&e).await {
                        return None;
                    }
                }
            }
        }
    }

    fn publish(
        &self,
        leaf: Option<LeafParts>,
        roots: Option<RootParts>,
    ) -> Result<(), IdentityError> {
        let mut parts = self
            .parts
            .lock()
            .expect("identity lock is never poisoned: no panics while held");
        let new_roots = roots.unwrap_or_else(|| parts.1.clone());
        let new_leaf = match leaf {
            Some(leaf) => {
                let current = parts.0.identity.service_id();
                check_leaf(&leaf, &new_roots, &self.service, current)?;
                leaf
            }
            // New roots alone are installed as the agent lists them, even if they no longer
            // include the current leaf's: the agent is about to issue a new leaf.
            None => parts.0.clone(),
        };
        let state = TlsState::build(&new_leaf, &new_roots, self.resumption)
            .map_err(IdentityError::Config)?;
        {
            let mut seen = self
                .first_seen
                .lock()
                .expect("identity lock is never poisoned");
            for key in &new_roots.signing_keys {
                seen.entry(key.clone()).or_insert_with(Instant::now);
            }
        }
        self.ctx.metrics.certificate_expires(state.leaf_not_after);
        self.ctx.metrics.trust_roots(new_roots.ids.len());
        *parts = (new_leaf, new_roots);
        self.tx.send_replace(Arc::new(state));
        Ok(())
    }

    /// How long to hold back `leaf` because its signing root is new (fetching the roots first
    /// if the leaf came before them).
    async fn grace_for(&self, leaf: &LeafParts) -> Option<Duration> {
        let key = leaf.authority_key_id.as_ref()?;
        let known = self
            .first_seen
            .lock()
            .expect("identity lock is never poisoned")
            .contains_key(key);
        if !known {
            match self.ctx.client.ca_roots(Blocking::now()).await {
                Ok(answer) => {
                    match roots_from(&answer.body, consul::next_index(0, answer.meta.index)) {
                        Ok(r) if r.signing_keys.contains(key) => {
                            if let Err(e) = self.publish(None, Some(r)) {
                                tracing::warn!(error = %e, "cannot use the new roots");
                            } else {
                                self.ctx.metrics.roots_updated();
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "ignoring a roots answer"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot fetch the roots for a new leaf"),
            }
        }
        // When the current leaf's root is no longer listed (a new CA, a new trust domain: a
        // restarted dev agent), peers that know the new roots already refuse the current leaf:
        // holding the new one back would only prolong the outage.
        {
            let parts = self.parts.lock().expect("identity lock is never poisoned");
            let current = parts.0.authority_key_id.as_ref();
            if current.is_some_and(|k| !parts.1.signing_keys.contains(k)) {
                return None;
            }
        }
        let seen = *self
            .first_seen
            .lock()
            .expect("identity lock is never poisoned")
            .get(key)?;
        let wait = NEW_ROOT_GRACE
            .checked_sub(seen.elapsed())
            .filter(|d| !d.is_zero())?;
        // Never hold the new leaf back past (or close to) the current one's expiry.
        let current_expiry = self
            .parts
            .lock()
            .expect("identity lock is never poisoned")
            .0
            .identity
            .not_after();
        let left = current_expiry
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        (left > wait + Duration::from_secs(1)).then_some(wait)
    }

    /// Follows the roots until the context stops.
    async fn watch_roots(self: Arc<Self>) {
        let mut w = Watcher::new("roots", &self.ctx);
        let mut index = self
            .parts
            .lock()
            .expect("identity lock is never poisoned")
            .1
            .index;
        loop {
            let query = |blocking| self.ctx.client.ca_roots(blocking);
            let Some(answer) = w.next_answer(index, query).await else {
                return;
            };
            let previous = index;
            index = w.next_index(previous, answer.meta.index);
            let same = {
                let parts = self.parts.lock().expect("identity lock is never poisoned");
                let ids: Vec<&str> = answer
                    .body
                    .roots
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect();
                parts
                    .1
                    .ids
                    .iter()
                    .map(String::as_str)
                    .eq(ids.iter().copied())
            };
            if same {
                continue;
            }
            match roots_from(&answer.body, index).and_then(|r| {
                let n = r.ids.len();
                self.publish(None, Some(r)).map(|_| n)
            }) {
                Ok(n) => {
                    self.ctx.metrics.roots_updated();
                    tracing::info!(roots = n, active = %answer.body.active_root_id, "trust roots updated")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a roots answer; keeping the current roots")
                }
            }
        }
    }

    /// Follows the leaf until the context stops. Besides the agent's blocking answer (new leaf at
    /// 60-90 % of its life or after a root change), a safety net asks again without blocking
    /// once 90 % of the lifetime has passed.
    async fn watch_leaf(self: Arc<Self>) {
        let mut w = Watcher::new("leaf", &self.ctx);
        let mut index = self
            .parts
            .lock()
            .expect("identity lock is never poisoned")
            .0
            .index;
        let mut safety_fetched: Option<String> = None;
        // The last leaf refused (wrong service, unknown CA, unusable): not logged again.
        let mut refused: Option<(String, bool)> = None;
        loop {
            let (serial, cert_pem, not_before, not_after) = {
                let parts = self.parts.lock().expect("identity lock is never poisoned");
                (
                    parts.0.serial.clone(),
                    parts.0.cert_pem.clone(),
                    parts.0.not_before,
                    parts.0.identity.not_after(),
                )
            };
            let lifetime = not_after.duration_since(not_before).unwrap_or_default();
            let renew_at = not_before + lifetime.mul_f64(0.9);
            let now = SystemTime::now();
            let query = match renew_at.duration_since(now) {
                // Normal case: the agent answers when it has a new leaf.
                Ok(until_renew) => Blocking::after(
                    w.query_index(index),
                    consul::DEFAULT_WAIT
                        .min(until_renew)
                        .max(Duration::from_secs(1)),
                ),
                // Safety net, once per leaf: a non-blocking fetch makes the agent revalidate.
                Err(_) if safety_fetched.as_deref() != Some(serial.as_str()) => {
                    safety_fetched = Some(serial.clone());
                    Blocking::now()
                }
                // Then keep asking, in short blocking rounds, until the new leaf comes.
                Err(_) => {
                    let left = not_after.duration_since(now).unwrap_or_default();
                    Blocking::after(
                        w.query_index(index),
                        (left / 2).clamp(Duration::from_secs(1), consul::DEFAULT_WAIT),
                    )
                }
            };
            let answer = match w.run(self.ctx.client.leaf(&self.service, query)).await {
                None => return,
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    if !w.failing() {
                        tracing::warn!(leaf.serial = %serial, leaf.not_after = %humantime::format_rfc3339_seconds(not_after),
                            "leaf renewal failed; keeping the current certificate until it is renewed");
                    }
                    if w.failed(&e).await {
                        continue;
                    }
                    return;
                }
            };
            w.succeeded();
            index = w.next_index(index, answer.meta.index);
            if answer.body.cert_pem == cert_pem {
                continue;
            }
            let seen_before = refused
                .as_ref()
                .filter(|(pem, _)| *pem == answer.body.cert_pem)
                .map(|(_, permanent)| *permanent);
            if seen_before == Some(true) {
                // The same unusable leaf again (another service's, unparseable): said once.
                tracing::debug!("the agent answers the leaf already refused");
                let _ = w.run(tokio::time::sleep(Duration::from_secs(1))).await;
                continue;
            }
            let leaf = match leaf_from(&answer.body, answer.meta.index) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, leaf.not_after = %humantime::format_rfc3339_seconds(not_after),
                        "ignoring an unusable leaf; keeping the current certificate");
                    refused = Some((answer.body.cert_pem.clone(), true));
                    let _ = w.run(tokio::time::sleep(Duration::from_secs(1))).await;
                    continue;
                }
            };
            if let Some(wait) = self.grace_for(&leaf).await {
                tracing::info!(
                    wait.ms = wait.as_millis() as u64,
                    "new leaf is signed by a new root: letting peers learn the root first"
                );
                if w.run(tokio::time::sleep(wait)).await.is_none() {
                    return;
                }
            }
            let new_serial = leaf.serial.clone();
            match self.publish(Some(leaf), None) {
                Ok(()) => {
                    self.ctx.metrics.leaf_rotated();
                    tracing::info!(leaf.serial = %new_serial, "leaf certificate rotated")
                }
                Err(e) => {
                    // A leaf that does not chain to the roots yet may once the roots watch
                    // installs its root: ask again without blocking and check it again, each
                    // second, saying so once. Another service's leaf stays refused.
                    let permanent = !matches!(e, IdentityError::LeafUntrusted(_));
                    if seen_before.is_none() {
                        tracing::warn!(error = %e, leaf.not_after = %humantime::format_rfc3339_seconds(not_after),
                            "ignoring an unusable leaf; keeping the current certificate");
                    } else {
                        tracing::debug!(error = %e, "the leaf still does not verify");
                    }
                    if !permanent {
                        index = 0;
                    }
                    refused = Some((answer.body.cert_pem.clone(), permanent));
                    let _ = w.run(tokio::time::sleep(Duration::from_secs(1))).await;
                }
            }
        }
    }
}

/// Why the first credentials could not be loaded.
enum Failure {
    Consul(ConsulError),
    Unusable(IdentityError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Consul(e) => e.fmt(f),
            Failure::Unusable(e) => write!(f, "the agent's certificates are not usable yet: {e}"),
        }
    }
}

impl WatchError for Failure {
    fn agent_unreachable(&self) -> bool {
        matches!(self, Failure::Consul(e) if e.agent_unreachable())
    }

    fn kind(&self) -> String {
        match self {
            Failure::Consul(e) => e.kind(),
            Failure::Unusable(_) => "unusable certificates".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> ClientKey {
        (
            "dc1".into(),
            "db".into(),
            false,
            format!("10.0.0.{n}:20000"),
        )
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used_config() {
        let mut cache = ClientConfigs::default();
        for n in 0..MAX_CLIENT_CONFIGS {
            cache.insert(key(n), n);
        }
        // Instance 0 is the oldest entry, but dialed again now: instance 1 goes instead.
        assert_eq!(cache.get(&key(0)), Some(0));
        cache.insert(key(MAX_CLIENT_CONFIGS), MAX_CLIENT_CONFIGS);
        assert_eq!(cache.configs.len(), MAX_CLIENT_CONFIGS);
        assert_eq!(cache.get(&key(0)), Some(0), "used recently: kept");
        assert_eq!(cache.get(&key(1)), None, "least recently used: dropped");
        assert_eq!(cache.get(&key(2)), Some(2));
        // Replacing an entry that is there drops nothing else.
        cache.insert(key(2), 22);
        assert_eq!(cache.configs.len(), MAX_CLIENT_CONFIGS);
        assert_eq!(cache.get(&key(3)), Some(3));
        assert_eq!(cache.get(&key(2)), Some(22));
    }
}
