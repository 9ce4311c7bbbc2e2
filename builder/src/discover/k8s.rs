//! Image fields in Kubernetes YAML (and in Helm values, which follow the same conventions).
//!
//! The walk does not need to know workload kinds: pod specs of Pods, Deployments,
//! StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs (`spec.jobTemplate.spec.template`)
//! all keep their containers, initContainers and ephemeralContainers under some `image:` key,
//! and so do CRDs and operator configs. Every mapping key is looked at:
//!
//! - `image: "repo:tag"`: a reference; text that is not one is a warning;
//! - `image: {registry, repository, tag, digest}`: the Bitnami / `helm create` map; `registry`
//!   is replaced by `global.imageRegistry` in charts, a digest wins over the tag, and a chart
//!   without a tag uses its `appVersion` (`{{ .Values.image.tag | default .Chart.AppVersion }}`);
//! - keys ending in `Image` or `_image` (`initImage`, `sidecar_image`) are read the same way,
//!   but text there that is not a reference is ignored rather than warned about.
//!
//! A CRD's schema (`image: {type: string}`) is a map without `repository`, so it is skipped.

use std::path::Path;
use std::sync::Arc;

use super::yaml::{self, Node, Value};
use super::{read_text, Certainty, Collector, Source};

/// Chart context for image maps: the registry override and the default tag.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MapContext<'a> {
    /// `global.imageRegistry`, when set.
    pub global_registry: Option<&'a str>,
    /// The chart's `appVersion`, for maps without a tag.
    pub default_tag: Option<&'a str>,
}

/// How a tree is walked.
pub(crate) struct Walk<'a> {
    /// Put before the YAML path in [`Source::what`]: `Deployment/web `, `values `.
    pub label: &'a str,
    /// For image maps.
    pub map: MapContext<'a>,
    /// Image fields at these dotted paths are left out (a chart's templates read them).
    pub skip: &'a dyn Fn(&str) -> bool,
}

/// Scans the YAML file at `path`.
pub(crate) fn scan_file(path: &Path, c: &mut Collector) {
    let Some(text) = read_text(path, c) else {
        return;
    };
    scan_text(&text, c.display(path), c);
}

/// Scans YAML `text` read from `file`: every document, each image field.
pub(crate) fn scan_text(text: &str, file: Arc<str>, c: &mut Collector) {
    let (docs, errors) = yaml::parse_documents(text, &file);
    for error in errors {
        c.warn(
            file.clone(),
            Some(error.line),
            format!(
                "failed to parse YAML: {}; the rest is still scanned",
                error.message
            ),
        );
    }
    for doc in &docs {
        let label = object_name(doc);
        let how = Walk {
            label: &label,
            map: MapContext::default(),
            skip: &|_| false,
        };
        walk(doc, &mut String::new(), &how, c);
    }
}

/// `Kind/name ` of a Kubernetes object, to prefix the YAML paths shown; empty otherwise.
fn object_name(doc: &Node) -> String {
    let kind = doc.get("kind").and_then(Node::as_text);
    let name = doc.path(["metadata", "name"]).and_then(Node::as_text);
    match (kind, name) {
        (Some(kind), Some(name)) => format!("{kind}/{name} "),
        (Some(kind), None) => format!("{kind} "),
        _ => String::new(),
    }
}

/// Walks `node`, recording every image field; `path` is the dotted YAML path so far.
pub(crate) fn walk(node: &Node, path: &mut String, how: &Walk, c: &mut Collector) {
    match &node.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if let Some(certainty) = image_key(key) {
                    if !(how.skip)(path) {
                        let what = format!("{}{path}", how.label);
                        image_field(value, &what, certainty, &how.map, c);
                    }
                }
                walk(value, path, how, c);
                path.truncate(len);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, how, c);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Whether `key` names an image field, and how sure that is.
fn image_key(key: &str) -> Option<Certainty> {
    if key == "image" {
        Some(Certainty::Certain)
    } else if key.len() > "image".len()
        && (key.ends_with("Image") || key.to_ascii_lowercase().ends_with("_image"))
    {
        Some(Certainty::Guess)
    } else {
        None
    }
}

fn image_field(value: &Node, path: &str, certainty: Certainty, cx: &MapContext, c: &mut Collector) {
    let source = |line| Source {
        file: value.file.clone(),
        line: Some(line),
        what: path.to_owned(),
    };
    match &value.value {
        Value::Str(text) => c.text(text, source(value.line), certainty),
        Value::Map(_) => {
            if let Some((text, at)) = image_map(value, cx) {
                let src = Source {
                    file: at.file.clone(),
                    line: Some(at.line),
                    what: path.to_owned(),
                };
                c.text(&text, src, certainty);
            }
        }
        Value::Other(text) if certainty == Certainty::Certain => c.warn(
            value.file.clone(),
            Some(value.line),
            format!("`{text}` is not an image reference ({path})"),
        ),
        _ => {}
    }
}

/// The reference an image map spells, with the node that names its repository; `None` when
/// the map has no non-empty `repository`.
pub(crate) fn image_map<'n>(map: &'n Node, cx: &MapContext) -> Option<(String, &'n Node)> {
    let repository_node = map.get("repository")?;
    let repository = repository_node.non_empty_text()?.trim();
    let registry = cx
        .global_registry
        .filter(|r| !r.trim().is_empty())
        .or_else(|| map.get("registry").and_then(Node::non_empty_text))
        .map(str::trim);
    let mut text = match registry {
        Some(registry) => format!("{}/{repository}", registry.trim_end_matches('/')),
        None => repository.to_owned(),
    };
    let digest = map.get("digest").and_then(Node::non_empty_text);
    let tag = map
        .get("tag")
        .and_then(Node::non_empty_text)
        .or(cx.default_tag.filter(|t| !t.trim().is_empty()));
    match (digest, tag) {
        (Some(digest), _) => {
            text.push('@');
            text.push_str(digest.trim());
        }
        (None, Some(tag)) => {
            text.push(':');
            text.push_str(tag.trim());
        }
        (None, None) => {}
    }
    Some((text, repository_node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Collector {
        let mut c = Collector::default();
        scan_text(text, Arc::from("m.yaml"), &mut c);
        c
    }

    fn found(c: &Collector) -> Vec<(String, usize, String)> {
        c.found
            .iter()
            .flat_map(|(r, sources)| {
                sources
                    .iter()
                    .map(move |s| (r.to_string(), s.line.unwrap(), s.what.clone()))
            })
            .collect()
    }

    #[test]
    fn cronjob_init_and_ephemeral_containers_are_found() {
        let c = scan(
            "\
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          initContainers:
            - name: init
              image: busybox:1.36
          containers:
            - name: main
              image: \"quay.io/team/job@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"
          ephemeralContainers:
            - name: debug
              image: registry.local:5000/tools/debug:2
",
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let mut got = found(&c);
        got.sort_by_key(|f| f.1);
        assert_eq!(
            got,
            [
                (
                    "docker.io/library/busybox:1.36".to_owned(),
                    11,
                    "CronJob/nightly spec.jobTemplate.spec.template.spec.initContainers[0].image"
                        .to_owned()
                ),
                (
                    "quay.io/team/job@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_owned(),
                    14,
                    "CronJob/nightly spec.jobTemplate.spec.template.spec.containers[0].image".to_owned()
                ),
                (
                    "registry.local:5000/tools/debug:2".to_owned(),
                    17,
                    "CronJob/nightly spec.jobTemplate.spec.template.spec.ephemeralContainers[0].image".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn crd_fields_maps_and_guessed_keys_are_found_and_schemas_skipped() {
        let c = scan(
            "\
kind: CustomResourceDefinition
spec:
  versions:
    - schema:
        openAPIV3Schema:
          properties:
            image: {type: string}
---
kind: Prometheus
metadata: {name: main}
spec:
  image: quay.io/prometheus/prometheus:v2.50.0
  thanos:
    baseImage: quay.io/thanos/thanos
    image:
      registry: ghcr.io
      repository: thanos/sidecar
      tag: v1
  osImage: Ubuntu 22.04 LTS
",
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let refs: Vec<String> = found(&c).into_iter().map(|f| f.0).collect();
        assert_eq!(
            refs,
            [
                "ghcr.io/thanos/sidecar:v1",
                "quay.io/prometheus/prometheus:v2.50.0",
                "quay.io/thanos/thanos:latest"
            ]
        );
    }

    #[test]
    fn a_non_reference_in_an_image_field_is_a_warning_and_templates_are_unresolved() {
        let c = scan("image: Not A Ref\n---\nimage: 3\n---\nimage: \"{{ .Values.x }}\"\n");
        assert!(c.found.is_empty());
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("m.yaml:1: invalid image reference"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("m.yaml:3: `3` is not an image reference"),
            "{warnings:?}"
        );
        assert_eq!(c.unresolved.len(), 1);
        assert_eq!(c.unresolved[0].line, 5);
    }

    #[test]
    fn unparsable_yaml_warns_at_its_line_and_keeps_the_other_documents() {
        let c = scan("image: a:1\n---\nimage: [b\n---\nimage: c:1\n");
        let refs: Vec<String> = found(&c).into_iter().map(|f| f.0).collect();
        assert_eq!(refs, ["docker.io/library/a:1", "docker.io/library/c:1"]);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].message.starts_with("failed to parse YAML"));
        assert!(
            matches!(c.warnings[0].line, Some(3 | 4)),
            "{:?}",
            c.warnings
        );
    }
}
