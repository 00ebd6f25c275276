//! `tandem-injector`: the mutating admission webhook that adds `tandem-proxy` to annotated pods,
//! the offline `inject` command, and the `install` manifests.
//!
//! The webhook ([`webhook`]) and `inject` ([`inject`]) share one path: [`Injector::mutate`]
//! decides ([`decision`]), reads the annotations ([`annotations`]) and builds a JSON patch
//! ([`patch`]). The webhook returns the patch in an `AdmissionReview` ([`review`]); `inject`
//! applies it with the `json-patch` crate.

pub mod annotations;
pub mod cli;
pub mod decision;
pub mod inject;
pub mod install;
pub mod patch;
pub mod review;
pub mod tls;
pub mod webhook;
mod yaml;

use serde_json::Value;

use crate::annotations::{AnnotationError, ConnectSettings};
use crate::decision::{Decision, Policy, SkipReason};
use crate::patch::{PatchOp, PodShapeError, SidecarOptions};

/// Everything the injector needs to answer for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injector {
    policy: Policy,
    sidecar: SidecarOptions,
}

/// What happens to one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Admitted unchanged.
    Skipped(SkipReason),
    /// Admitted with the sidecar.
    Patched {
        /// The JSON patch (RFC 6902) that adds it.
        ops: Vec<PatchOp>,
        /// What the annotations said, for the log line.
        settings: ConnectSettings,
    },
}

/// Why a pod is rejected (`allowed: false`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutateError {
    /// An annotation with a value that cannot be used.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// A pod the patch cannot be written for.
    #[error(transparent)]
    Shape(#[from] PodShapeError),
}

impl Injector {
    /// An injector that applies `policy` and injects the sidecar `sidecar` describes.
    pub fn new(policy: Policy, sidecar: SidecarOptions) -> Self {
        Injector { policy, sidecar }
    }

    /// Who is injected (logged at start-up).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides for `pod` admitted into `namespace` and, when injecting, builds the patch.
    pub fn mutate(&self, namespace: &str, pod: &Value) -> Result<Outcome, MutateError> {
        match decision::decide(&self.policy, namespace, pod)? {
            Decision::Skip(reason) => Ok(Outcome::Skipped(reason)),
            Decision::Inject => {
                let settings = annotations::connect_settings(pod)?;
                let ops = patch::build(pod, &settings, &self.sidecar)?;
                Ok(Outcome::Patched { ops, settings })
            }
        }
    }
}

#[cfg(test)]
impl Injector {
    /// The injector the unit tests share: default policy, proxy image `p:1`, classic sidecar.
    pub(crate) fn for_tests() -> Self {
        Injector::new(
            Policy::default(),
            SidecarOptions {
                proxy_image: "p:1".into(),
                consul_http_addr: None,
                native_sidecar: false,
                tunnel: false,
            },
        )
    }
}
