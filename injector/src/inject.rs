//! Offline injection (`tandem-injector inject`), like `linkerd inject`: reads manifests, injects
//! Pods and the pod templates of workloads, writes everything else back unchanged.
//!
//! The same code path as the webhook: [`Injector::mutate`] builds the patch, and it is applied
//! with the `json-patch` crate. Documents are handled as `serde_json::Value`, so fields this
//! crate does not know are kept.

use serde_json::Value;

use crate::{Injector, MutateError, Outcome};

pub use crate::yaml::read::ReadError;

/// A manifest that cannot be read or an object that the injector rejects. Each message already
/// includes its cause (the field is `error`, not `source`, so that an error chain printed with
/// `{:#}` says it once).
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// JSON input with a document that does not parse.
    #[error("document {index}: not valid JSON: {error}")]
    Json {
        /// Which document, from 0.
        index: usize,
        /// The parser's error.
        error: serde_json::Error,
    },
    /// YAML input that does not parse.
    #[error("not valid YAML: {error}")]
    Yaml {
        /// The reader's error.
        error: ReadError,
    },
    /// The webhook would refuse this pod (a bad annotation, or a pod the patch cannot fit).
    #[error("{object}: {error}")]
    Rejected {
        /// `kind/name`, e.g. `deployment/web`.
        object: String,
        /// Why.
        error: MutateError,
    },
    /// The patch built for the object does not apply to it (a bug: the patch is built for it).
    #[error("{object}: the patch does not apply: {error}")]
    Apply {
        /// `kind/name`.
        object: String,
        /// What `json-patch` said.
        error: json_patch::PatchError,
    },
}

/// The input's format; the output uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON value or several concatenated; written back pretty-printed.
    Json,
    /// One or more YAML documents; written back separated by `---`.
    Yaml,
}

/// What happened to one object, for the summary on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `kind/name` in lower case, e.g. `deployment/web` (`<unnamed>` without a name).
    pub object: String,
    /// `injected (service web)` or `skipped: <why>`.
    pub result: String,
}

/// Workload kinds whose pod template is at `/spec/template`.
const TEMPLATE_KINDS: [&str; 6] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "ReplicationController",
];

/// Injects every document of `input` and renders the result in the input's format.
pub fn inject_text(
    injector: &Injector,
    default_namespace: &str,
    input: &str,
) -> Result<(String, Vec<Change>), InjectError> {
    let (format, mut docs) = parse(input)?;
    let mut changes = Vec::new();
    for doc in &mut docs {
        inject_object(injector, default_namespace, doc, &mut changes)?;
    }
    Ok((render(format, &docs), changes))
}

/// Reads JSON (one value or several concatenated) or YAML (one or more `---` documents).
/// Empty YAML documents are dropped.
pub fn parse(input: &str) -> Result<(Format, Vec<Value>), InjectError> {
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let docs = serde_json::Deserializer::from_str(input)
            .into_iter::<Value>()
            .enumerate()
            .map(|(index, d)| d.map_err(|error| InjectError::Json { index, error }))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((Format::Json, docs));
    }
    // Read as kubectl reads it (YAML 1.1: a plain `0644` is 420, `yes` is true), so that the
    // objects written back are the ones the user's manifest means to kubectl.
    let docs = crate::yaml::documents(input).map_err(|error| InjectError::Yaml { error })?;
    Ok((
        Format::Yaml,
        docs.into_iter().filter(|d| !d.is_null()).collect(),
    ))
}

/// Writes documents back: pretty JSON, or YAML documents separated by `---` that YAML 1.1
/// readers (kubectl) and 1.2 readers read the same way.
pub fn render(format: Format, docs: &[Value]) -> String {
    match format {
        Format::Json => docs
            .iter()
            .map(|d| serde_json::to_string_pretty(d).expect("invariant: a Value serializes") + "\n")
            .collect(),
        Format::Yaml => {
            let mut out = String::new();
            for (i, doc) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&crate::yaml::to_string(doc));
            }
            out
        }
    }
}

/// Injects one object in place: a Pod, a workload's pod template, or the items of a List.
pub(crate) fn inject_object(
    injector: &Injector,
    default_namespace: &str,
    obj: &mut Value,
    changes: &mut Vec<Change>,
) -> Result<(), InjectError> {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.ends_with("List") {
        if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_object(injector, default_namespace, item, changes)?;
            }
            return Ok(());
        }
    }
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(default_namespace)
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .or_else(|| obj.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let object = format!("{}/{name}", kind.to_lowercase());
    let pointer = match kind.as_str() {
        "Pod" => "",
        "CronJob" => "/spec/jobTemplate/spec/template",
        k if TEMPLATE_KINDS.contains(&k) => "/spec/template",
        _ => return Ok(()),
    };
    let Some(target) = obj.pointer_mut(pointer).filter(|t| t.is_object()) else {
        changes.push(Change {
            object,
            result: "skipped: no pod template".into(),
        });
        return Ok(());
    };
    match injector.mutate(&namespace, target) {
        Ok(Outcome::Skipped(reason)) => changes.push(Change {
            object,
            result: format!("skipped: {reason}"),
        }),
        Ok(Outcome::Patched { ops, settings }) => {
            crate::patch::apply(target, &ops).map_err(|error| InjectError::Apply {
                object: object.clone(),
                error,
            })?;
            changes.push(Change {
                object,
                result: format!("injected (service {})", settings.service),
            });
        }
        Err(error) => return Err(InjectError::Rejected { object, error }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::SIDECAR_NAME;

    const TEMPLATE: &str = r#"{"metadata": {"annotations": {"consul.hashicorp.com/connect-inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]}}"#;

    #[test]
    fn every_workload_kind_gets_its_template_injected() {
        let template: Value = serde_json::from_str(TEMPLATE).unwrap();
        for kind in TEMPLATE_KINDS.iter().chain(["CronJob"].iter()) {
            let mut obj = if *kind == "CronJob" {
                serde_json::json!({"kind": kind, "metadata": {"name": "w"},
                    "spec": {"jobTemplate": {"spec": {"template": template.clone()}}}})
            } else {
                serde_json::json!({"kind": kind, "metadata": {"name": "w"}, "spec": {"template": template.clone()}})
            };
            let mut changes = Vec::new();
            inject_object(&Injector::for_tests(), "default", &mut obj, &mut changes).unwrap();
            let t = if *kind == "CronJob" {
                &obj["spec"]["jobTemplate"]["spec"]["template"]
            } else {
                &obj["spec"]["template"]
            };
            assert_eq!(t["spec"]["containers"][1]["name"], SIDECAR_NAME, "{kind}");
            assert!(changes[0].result.starts_with("injected"), "{kind}");
        }
    }

    #[test]
    fn other_kinds_pass_through_and_lists_recurse() {
        let input = r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"x-unknown": 1}},
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
                  "spec": {"containers": [{"name": "app", "image": "x", "futureField": true}]}}]}"#;
        let (out, changes) = inject_text(&Injector::for_tests(), "default", input).unwrap();
        let (_, docs) = parse(&out).unwrap();
        assert_eq!(docs[0]["items"][0]["spec"]["x-unknown"], 1);
        assert_eq!(
            docs[0]["items"][1]["spec"]["containers"][0]["futureField"],
            true
        );
        assert_eq!(
            docs[0]["items"][1]["spec"]["containers"][1]["name"],
            SIDECAR_NAME
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].object, "pod/p");
    }

    #[test]
    fn yaml_multi_documents_round_trip() {
        let input = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: \"true\"\n---\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: b\n";
        let (out, changes) = inject_text(&Injector::for_tests(), "default", input).unwrap();
        let (format, docs) = parse(&out).unwrap();
        assert_eq!(format, Format::Yaml);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["data"]["k"], "true");
        assert_eq!(
            changes[0].result,
            "skipped: no connect-inject annotation and injection is not on by default"
        );
    }

    #[test]
    fn rejected_objects_are_named() {
        let input = r#"{"kind": "Pod", "metadata": {"name": "p", "annotations": {"consul.hashicorp.com/connect-inject": "nope"}},
            "spec": {"containers": [{"name": "a"}]}}"#;
        let err = inject_text(&Injector::for_tests(), "default", input)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "pod/p: invalid annotation consul.hashicorp.com/connect-inject=\"nope\""
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(parse("{"), Err(InjectError::Json { .. })));
        assert!(matches!(parse("a: [\n"), Err(InjectError::Yaml { .. })));
    }
}
