//! Whether a pod gets the sidecar, in the order consul-k8s decides it.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::annotations::{self, AnnotationError, CONNECT_INJECT, CONNECT_INJECT_STATUS};

/// Namespaces that are never injected, whatever the flags say.
pub(crate) const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// A comma-separated namespace list: `a,b`, or `*` for every namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceList {
    /// `*`.
    All,
    /// The names listed (trimmed, never empty).
    Only(Vec<String>),
}

impl NamespaceList {
    /// Whether `namespace` is in the list (exact match).
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            NamespaceList::All => true,
            NamespaceList::Only(names) => names.iter().any(|n| n == namespace),
        }
    }
}

impl FromStr for NamespaceList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        if names.iter().any(|n| n == "*") {
            if names.len() > 1 {
                return Err(format!("{s:?}: '*' cannot be combined with names"));
            }
            return Ok(NamespaceList::All);
        }
        if names.is_empty() {
            return Err("an empty namespace list (use '*' for all)".into());
        }
        Ok(NamespaceList::Only(names))
    }
}

impl fmt::Display for NamespaceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamespaceList::All => f.write_str("*"),
            NamespaceList::Only(names) => f.write_str(&names.join(",")),
        }
    }
}

/// The namespace and default-inject policy from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Inject pods that carry no `connect-inject` annotation.
    pub default_inject: bool,
    /// When set, only these namespaces are injected.
    pub allow: Option<NamespaceList>,
    /// Never injected; wins over `allow`.
    pub deny: Vec<String>,
}

/// The outcome for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Inject,
    Skip(SkipReason),
}

/// Why a pod is admitted without the sidecar (its `Display` is the log line's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `kube-system` or `kube-public`.
    SystemNamespace,
    /// In `--deny-namespaces`.
    DeniedNamespace,
    /// Not in `--allow-namespaces`.
    NamespaceNotAllowed,
    /// `connect-inject-status` is already set (the pod went through an injector).
    AlreadyInjected,
    /// `connect-inject` is false.
    AnnotatedFalse,
    /// No `connect-inject` and `--default-inject` is off.
    NotAnnotated,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::SystemNamespace => "system namespace",
            SkipReason::DeniedNamespace => "namespace is denied (--deny-namespaces)",
            SkipReason::NamespaceNotAllowed => "namespace is not allowed (--allow-namespaces)",
            SkipReason::AlreadyInjected => "already injected (connect-inject-status is set)",
            SkipReason::AnnotatedFalse => "connect-inject is false",
            SkipReason::NotAnnotated => {
                "no connect-inject annotation and injection is not on by default"
            }
        })
    }
}

/// Decides for a pod admitted into `namespace` (the request's namespace, never the pod's, which
/// is empty at admission). Only an unparseable `connect-inject` is an error, and only when the
/// earlier checks did not already skip the pod.
pub(crate) fn decide(
    policy: &Policy,
    namespace: &str,
    pod: &Value,
) -> Result<Decision, AnnotationError> {
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return Ok(Decision::Skip(SkipReason::SystemNamespace));
    }
    if policy.deny.iter().any(|n| n == namespace) {
        return Ok(Decision::Skip(SkipReason::DeniedNamespace));
    }
    if let Some(allow) = &policy.allow {
        if !allow.contains(namespace) {
            return Ok(Decision::Skip(SkipReason::NamespaceNotAllowed));
        }
    }
    let annotations = annotations::of(pod);
    if annotations::string_value(&annotations, CONNECT_INJECT_STATUS)?
        .is_some_and(|s| !s.is_empty())
    {
        return Ok(Decision::Skip(SkipReason::AlreadyInjected));
    }
    match annotations::string_value(&annotations, CONNECT_INJECT)? {
        Some(raw) => match annotations::parse_bool(raw) {
            Some(true) => Ok(Decision::Inject),
            Some(false) => Ok(Decision::Skip(SkipReason::AnnotatedFalse)),
            None => Err(AnnotationError {
                annotation: CONNECT_INJECT,
                value: raw.to_string(),
                reason: "want true or false (or 1, t, T, TRUE, True, 0, f, F, FALSE, False)".into(),
            }),
        },
        None if policy.default_inject => Ok(Decision::Inject),
        None => Ok(Decision::Skip(SkipReason::NotAnnotated)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "a"}]}})
    }

    fn opted_in() -> Value {
        pod(json!({CONNECT_INJECT: "true"}))
    }

    #[test]
    fn system_namespaces_win_over_everything() {
        let policy = Policy {
            default_inject: true,
            allow: Some(NamespaceList::All),
            ..Policy::default()
        };
        for ns in SYSTEM_NAMESPACES {
            assert_eq!(
                decide(&policy, ns, &opted_in()),
                Ok(Decision::Skip(SkipReason::SystemNamespace))
            );
            // Not even a bad annotation is looked at there.
            let bad = pod(json!({CONNECT_INJECT: "yes"}));
            assert_eq!(
                decide(&policy, ns, &bad),
                Ok(Decision::Skip(SkipReason::SystemNamespace))
            );
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let policy = Policy {
            allow: Some("web,db".parse().unwrap()),
            deny: vec!["web".into()],
            ..Policy::default()
        };
        assert_eq!(
            decide(&policy, "web", &opted_in()),
            Ok(Decision::Skip(SkipReason::DeniedNamespace))
        );
        assert_eq!(decide(&policy, "db", &opted_in()), Ok(Decision::Inject));
        assert_eq!(
            decide(&policy, "other", &opted_in()),
            Ok(Decision::Skip(SkipReason::NamespaceNotAllowed))
        );
    }

    #[test]
    fn no_allow_list_means_every_namespace() {
        assert_eq!(
            decide(&Policy::default(), "anything", &opted_in()),
            Ok(Decision::Inject)
        );
    }

    #[test]
    fn already_injected_is_checked_before_the_opt_in() {
        let p = pod(json!({CONNECT_INJECT: "maybe", CONNECT_INJECT_STATUS: "injected"}));
        assert_eq!(
            decide(&Policy::default(), "default", &p),
            Ok(Decision::Skip(SkipReason::AlreadyInjected))
        );
        // An empty status does not count as injected (as in consul-k8s).
        let p = pod(json!({CONNECT_INJECT: "true", CONNECT_INJECT_STATUS: ""}));
        assert_eq!(
            decide(&Policy::default(), "default", &p),
            Ok(Decision::Inject)
        );
    }

    #[test]
    fn annotation_overrides_default_and_bad_values_are_errors() {
        let on = Policy {
            default_inject: true,
            ..Policy::default()
        };
        let off = Policy::default();
        assert_eq!(
            decide(&on, "d", &pod(json!({CONNECT_INJECT: "F"}))),
            Ok(Decision::Skip(SkipReason::AnnotatedFalse))
        );
        assert_eq!(
            decide(&off, "d", &pod(json!({CONNECT_INJECT: "1"}))),
            Ok(Decision::Inject)
        );
        assert_eq!(decide(&on, "d", &pod(json!({}))), Ok(Decision::Inject));
        assert_eq!(
            decide(&off, "d", &json!({"metadata": {}})),
            Ok(Decision::Skip(SkipReason::NotAnnotated))
        );
        let err = decide(&off, "d", &pod(json!({CONNECT_INJECT: "yes"}))).unwrap_err();
        assert_eq!(err.annotation, CONNECT_INJECT);
        assert_eq!(err.value, "yes");
    }

    #[test]
    fn namespace_list_parsing() {
        assert_eq!("*".parse::<NamespaceList>(), Ok(NamespaceList::All));
        assert_eq!(
            " a, b ,".parse::<NamespaceList>(),
            Ok(NamespaceList::Only(vec!["a".into(), "b".into()]))
        );
        assert!("a,*".parse::<NamespaceList>().is_err());
        assert!("".parse::<NamespaceList>().is_err());
    }
}
