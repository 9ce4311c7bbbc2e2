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
use crate::reference::ImageRef;

/// Chart context for image maps: the registry override.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MapContext<'a> {
    /// `global.imageRegistry`, when set.
    pub global_registry: Option<&'a str>,
}

/// How a tree is walked.
pub(crate) struct Walk<'a> {
    /// Put before the YAML path in [`Source::what`]: `Deployment/web `, `values `.
    pub label: &'a str,
    /// For image maps.
    pub map: MapContext<'a>,
    /// Image fields at these dotted paths are left out (a chart's templates read them).
    pub skip: &'a dyn Fn(&str) -> bool,
    /// The tree is a chart's values, not manifests: what templates make of a value is not
    /// known, so a value without a tag or digest is unresolved (never `latest`, never the
    /// `appVersion`), and so is every value when `blocked` says why none can be trusted.
    pub values: bool,
    /// Why no image value of this chart can be taken as written (its templates compute
    /// names discovery cannot evaluate).
    pub blocked: Option<&'a str>,
}

impl Walk<'_> {
    /// How manifests are walked: every field as written.
    pub(crate) fn manifests(label: &str) -> Walk<'_> {
        Walk {
            label,
            map: MapContext::default(),
            skip: &|_| false,
            values: false,
            blocked: None,
        }
    }
}

const UNTAGGED: &str = "no tag or digest is written here and the chart or operator picks one; \
                        render the chart with helm or list the image in `images:`";

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
        walk(doc, &mut String::new(), &Walk::manifests(&label), c);
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
            let versioned = base_image(node);
            for (key, value) in entries {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if key == "baseImage" && versioned.is_some() {
                    if !(how.skip)(path) {
                        let (text, at) = versioned.clone().expect("checked");
                        let what = format!("{}{path}", how.label);
                        string_field(&text, at, &what, Certainty::Guess, how, c);
                    }
                } else if let Some(certainty) = image_key(key) {
                    if !(how.skip)(path) {
                        let what = format!("{}{path}", how.label);
                        image_field(value, &what, certainty, how, c);
                    }
                } else if how.values && is_tagged_image_map(value) && !(how.skip)(path) {
                    // `sidecar: {repository: ..., tag: ...}` under any key: charts pass such
                    // images in arguments (`--sidecar-image=...`).
                    let what = format!("{}{path}", how.label);
                    image_field(value, &what, Certainty::Guess, how, c);
                }
                if matches!(key.as_str(), "args" | "command" | "env") {
                    argument_images(key, value, &format!("{}{path}", how.label), c);
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

/// A map with a `repository` and a `tag` or `digest` beside it.
fn is_tagged_image_map(node: &Node) -> bool {
    node.get("repository")
        .and_then(Node::non_empty_text)
        .is_some()
        && ["tag", "digest"]
            .iter()
            .any(|k| node.get(k).and_then(Node::non_empty_text).is_some())
}

/// The Prometheus-operator convention (`baseImage` with `tag`, `version` or `sha` beside it,
/// as in `Prometheus`, `Alertmanager` and `ThanosRuler` objects): the reference it spells.
fn base_image(map: &Node) -> Option<(String, &Node)> {
    let base = map.get("baseImage")?;
    let text = base.non_empty_text()?.trim();
    if let Some(sha) = map.get("sha").and_then(Node::non_empty_text) {
        return Some((format!("{text}@sha256:{}", sha.trim()), base));
    }
    let tag = ["tag", "version"]
        .iter()
        .find_map(|k| map.get(k).and_then(Node::non_empty_text))?;
    Some((format!("{text}:{}", tag.trim()), base))
}

/// Image references in container `args`/`command` items and `env` values
/// (`--acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:v1.19.1`): taken only
/// when the text names a registry host or a repository path, has a tag or digest, and parses.
fn argument_images(key: &str, value: &Node, what: &str, c: &mut Collector) {
    let Value::Seq(items) = &value.value else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let (text, at, what) = if key == "env" {
            match item.get("value") {
                Some(v) => (v.as_text(), v, format!("{what}[{i}].value")),
                None => continue,
            }
        } else {
            (item.as_text(), item, format!("{what}[{i}]"))
        };
        let Some(text) = text else { continue };
        let text = text.trim();
        let candidate = match text.strip_prefix('-') {
            Some(flag) => match flag.split_once('=') {
                Some((_, v)) => v,
                None => continue,
            },
            None => text,
        };
        if let Some(reference) = loose_reference(candidate) {
            let source = Source {
                file: at.file.clone(),
                line: Some(at.line),
                what,
            };
            c.reference(reference, source);
        }
    }
}

/// `text` as a reference when it is clearly one: no template, no URL, a tag or digest, and
/// a repository path (`team/app:1`) or a registry host (`quay.io/app:1`).
pub(crate) fn loose_reference(text: &str) -> Option<ImageRef> {
    if text.is_empty() || super::is_templated(text) || text.contains("://") {
        return None;
    }
    if !spells_tag_or_digest(text) || !text.contains('/') {
        return None;
    }
    text.parse().ok()
}

/// Whether `text` writes a tag or a digest (rather than leaving `latest` implied).
pub(crate) fn spells_tag_or_digest(text: &str) -> bool {
    text.contains('@')
        || text
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// Whether `key` names an image field, and how sure that is.
fn image_key(key: &str) -> Option<Certainty> {
    if key == "image" {
        Some(Certainty::Certain)
    } else if key == "imageName"
        || key.len() > "image".len()
            && (key.ends_with("Image") || key.to_ascii_lowercase().ends_with("_image"))
    {
        // `imageName`: CloudNativePG's `Cluster.spec.imageName`.
        Some(Certainty::Guess)
    } else {
        None
    }
}

fn image_field(value: &Node, path: &str, certainty: Certainty, how: &Walk, c: &mut Collector) {
    match &value.value {
        Value::Str(text) => string_field(text, value, path, certainty, how, c),
        Value::Map(_) => {
            if let Some((text, at, complete)) = image_map(value, &how.map) {
                let source = Source {
                    file: at.file.clone(),
                    line: Some(at.line),
                    what: path.to_owned(),
                };
                if let (true, Some(reason)) = (how.values, how.blocked) {
                    c.unresolved(&source, &text, reason.to_owned());
                } else if !complete {
                    c.unresolved(&source, &text, UNTAGGED.to_owned());
                } else {
                    c.text(&text, source, certainty);
                }
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

/// An image field holding text: a reference as written, unless it leaves its tag to someone
/// else (chart values, operator fields) or the chart's values cannot be trusted.
fn string_field(
    text: &str,
    at: &Node,
    path: &str,
    certainty: Certainty,
    how: &Walk,
    c: &mut Collector,
) {
    let source = Source {
        file: at.file.clone(),
        line: Some(at.line),
        what: path.to_owned(),
    };
    let trimmed = text.trim();
    let parses = trimmed.parse::<ImageRef>().is_ok();
    if trimmed.is_empty() {
        return;
    }
    if let (true, Some(reason)) = (how.values, how.blocked) {
        if certainty == Certainty::Certain || parses {
            c.unresolved(&source, trimmed, reason.to_owned());
        }
        return;
    }
    let leaves_tag = how.values || certainty == Certainty::Guess;
    if leaves_tag && parses && !spells_tag_or_digest(trimmed) && !super::is_templated(trimmed) {
        c.unresolved(&source, trimmed, UNTAGGED.to_owned());
        return;
    }
    c.text(trimmed, source, certainty);
}

/// The reference an image map spells, with the node that names its repository and whether
/// it has a tag or digest; `None` when the map has no non-empty `repository`.
pub(crate) fn image_map<'n>(map: &'n Node, cx: &MapContext) -> Option<(String, &'n Node, bool)> {
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
    let tag = map.get("tag").and_then(Node::non_empty_text);
    match (digest, tag) {
        (Some(digest), _) => {
            text.push('@');
            text.push_str(digest.trim());
        }
        (None, Some(tag)) => {
            text.push(':');
            text.push_str(tag.trim());
        }
        (None, None) => return Some((text, repository_node, spells_tag_or_digest(repository))),
    }
    Some((text, repository_node, true))
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
            ]
        );
        // An operator field without a tag is the operator's choice: unresolved, not latest.
        assert_eq!(c.unresolved.len(), 1);
        assert_eq!(
            (c.unresolved[0].line, c.unresolved[0].text.as_str()),
            (14, "quay.io/thanos/thanos")
        );
    }

    #[test]
    fn images_in_args_command_env_and_operator_fields_are_found_only_when_unambiguous() {
        let c = scan(
            "\
kind: Deployment
metadata: {name: cm}
spec:
  template:
    spec:
      containers:
        - name: controller
          image: quay.io/jetstack/cert-manager-controller:v1.19.1
          args:
            - --v=2
            - --acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:v1.19.1
            - --metrics-listen-address=0.0.0.0:9402
            - --cluster-resource-namespace=$(POD_NAMESPACE)
            - --service-cidr=10.0.0.0/16
            - --config=/etc/config.yaml
            - --webhook=https://example.com:443/x
            - --image
            - ghcr.io/team/sidecar@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
          command: [/bin/run, busybox:1.36, team/tool:2]
          env:
            - {name: RELATED_IMAGE_DB, value: registry.example.com/db/postgres:16}
            - {name: LEVEL, value: info}
            - {name: HOST, value: example.com:8080}
---
kind: Prometheus
metadata: {name: k8s}
spec:
  baseImage: quay.io/prometheus/prometheus
  version: v2.50.0
---
kind: Cluster
metadata: {name: pg}
spec:
  imageName: ghcr.io/cloudnative-pg/postgresql:16.2
",
        );
        let refs: Vec<String> = found(&c).into_iter().map(|f| f.0).collect();
        assert_eq!(
            refs,
            [
                "docker.io/team/tool:2",
                "ghcr.io/cloudnative-pg/postgresql:16.2",
                "ghcr.io/team/sidecar@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "quay.io/jetstack/cert-manager-acmesolver:v1.19.1",
                "quay.io/jetstack/cert-manager-controller:v1.19.1",
                "quay.io/prometheus/prometheus:v2.50.0",
                "registry.example.com/db/postgres:16",
            ]
        );
        assert!(c.unresolved.is_empty() && c.warnings.is_empty());
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
