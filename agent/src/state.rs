//! All agent state behind one lock, and the single raft-like index that orders every write.
//!
//! Writes go through [`Agent::write`], which hands out at most one new index per write and
//! publishes it on a `watch` channel; blocking queries wait on that channel and re-evaluate
//! their own (per-resource) index.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::ca::Ca;
use crate::catalog::{Catalog, Node};
use crate::config_entries::ConfigEntries;
use crate::intentions::Intentions;
use crate::queries::Queries;

/// What the agent was started with (the parts handlers read).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub datacenter: String,
    pub node_name: String,
    pub node_id: String,
    pub default_allow: bool,
    pub leaf_ttl: Duration,
    pub require_token: Option<String>,
}

pub(crate) struct State {
    pub catalog: Catalog,
    pub intentions: Intentions,
    pub config: ConfigEntries,
    pub ca: Ca,
    pub queries: Queries,
}

impl State {
    /// The index of Consul 1.10's `config-entries` table: intentions are `service-intentions`
    /// config entries there, so a write to either moves the index that both intention queries
    /// and config entry queries answer with and block on.
    pub(crate) fn config_entries_index(&self) -> u64 {
        self.intentions.table_index().max(self.config.table_index())
    }
}

/// The shared agent: settings, state and the change channel.
pub(crate) struct Agent {
    pub settings: Settings,
    state: Mutex<State>,
    index: Mutex<u64>,
    changes: watch::Sender<u64>,
    /// Requests parked in a blocking wait right now.
    pub waiters: crate::blocking::Waiters,
    /// Whether `/v1/agent/connect/ca/roots` was served before: Consul's agent cache answers
    /// the first request `X-Cache: MISS` and every later one `HIT`.
    pub roots_cached: std::sync::atomic::AtomicBool,
}

/// One write's view of the index: the first call to [`Txn::index`] allocates the next index,
/// later calls in the same write return the same one.
pub(crate) struct Txn {
    next: u64,
    used: bool,
}

impl Txn {
    pub(crate) fn index(&mut self) -> u64 {
        self.used = true;
        self.next
    }
}

impl Agent {
    pub(crate) fn new(settings: Settings) -> Result<Arc<Self>, crate::ca::CaSetupError> {
        let mut tx = Txn {
            next: 1,
            used: false,
        };
        let catalog = Catalog::new(
            Node {
                id: settings.node_id.clone(),
                name: settings.node_name.clone(),
                address: "127.0.0.1".to_string(),
                datacenter: settings.datacenter.clone(),
                create_index: 0,
                modify_index: 0,
            },
            &mut tx,
        );
        let mut tx = Txn {
            next: 2,
            used: false,
        };
        let ca = Ca::new(&settings, &mut tx)?;
        let mut tx = Txn {
            next: 3,
            used: false,
        };
        let intentions = Intentions::new(&mut tx);
        let (changes, _) = watch::channel(3);
        Ok(Arc::new(Agent {
            settings,
            state: Mutex::new(State {
                catalog,
                intentions,
                config: ConfigEntries::default(),
                ca,
                queries: Queries::default(),
            }),
            index: Mutex::new(3),
            changes,
            waiters: Default::default(),
            roots_cached: Default::default(),
        }))
    }

    /// Runs `f` on a consistent snapshot of the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Runs a write; if it allocated an index, publishes it and wakes every blocking query.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut State, &mut Txn) -> R) -> R {
        let mut state = self.lock();
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = Txn {
            next: *index + 1,
            used: false,
        };
        let result = f(&mut state, &mut tx);
        if tx.used {
            *index = tx.next;
            self.changes.send_replace(tx.next);
        }
        result
    }

    /// A receiver that sees every index published after this call.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters more than refusing service forever, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Txn {
    /// A transaction that allocates `next`, for unit tests of the stores (and `crate::fuzzing`).
    pub(crate) fn for_tests(next: u64) -> Self {
        Txn { next, used: false }
    }
}
