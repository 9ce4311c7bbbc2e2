//! Helm charts, read without rendering them.
//!
//! A chart is a folder with `Chart.yaml`, or a packaged `.tgz` (as `helm package` writes it,
//! one top folder holding `Chart.yaml`); subcharts live under `charts/` in either form. For
//! each chart, with its effective values (its `values.yaml`, the parent's values under the
//! subchart's name or alias merged over them, and the parent's `global` merged over its own):
//!
//! 1. every `image:` line of `templates/` (`.yaml`, `.yml`, `.tpl`) is resolved with
//!    [`template`](super::template); what cannot be resolved is listed as unresolved;
//! 2. the values are walked for the image conventions of [`k8s`](super::k8s) (with
//!    `global.imageRegistry` and the `appVersion` tag default), leaving out the fields the
//!    templates already read (they gave the precise reference) and the subtrees of subcharts
//!    (read with the subchart's own context instead). This catches images that templates use
//!    through helpers or `with` blocks; it also captures images of components a chart may have
//!    disabled, which costs space but never a missing image;
//! 3. `crds/` is read as Kubernetes YAML;
//! 4. subcharts are read the same way; a dependency in `Chart.yaml` that is not under
//!    `charts/` (`helm dependency build` not run) is a warning.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::k8s::{self, MapContext, Walk};
use super::template::{self, Context};
use super::yaml::{self, Node, Value};
use super::{text_of, Certainty, Collector, Source};
use crate::reference::ImageRef;

/// Files above this size are not read (charts are text; this bounds memory on odd input).
const MAX_FILE: u64 = 8 << 20;
/// Total bytes read from one chart archive.
const MAX_ARCHIVE: u64 = 256 << 20;
/// Subcharts nested deeper than this are not read.
const MAX_DEPTH: usize = 16;

/// A chart's files in memory: paths relative to the chart's folder.
struct ChartFiles {
    /// Put before a relative path to show it: `charts/app/`, `app-1.0.tgz!/app/`.
    prefix: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl ChartFiles {
    fn display(&self, rel: &str) -> Arc<str> {
        Arc::from(format!("{}{rel}", self.prefix))
    }

    /// Parses the YAML file `rel`, warning about what does not parse.
    fn yaml(&self, rel: &str, c: &mut Collector) -> Vec<Node> {
        let Some(bytes) = self.files.get(rel) else {
            return Vec::new();
        };
        let file = self.display(rel);
        let Some(text) = text_of(bytes.clone(), file.clone(), c) else {
            return Vec::new();
        };
        let (docs, errors) = yaml::parse_documents(&text, &file);
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
        docs
    }
}

/// Whether discovery keeps a chart file: what it reads, and subcharts.
fn wanted(rel: &str) -> bool {
    matches!(rel, "Chart.yaml" | "values.yaml")
        || ["templates/", "crds/", "charts/"]
            .iter()
            .any(|p| rel.starts_with(p))
}

/// Reads the chart folder or archive at `path` into memory; `None` (with a warning) when it
/// is not one.
fn load_chart(path: &Path, c: &mut Collector) -> Option<ChartFiles> {
    if path.is_dir() {
        let mut files = BTreeMap::new();
        read_tree(path, "", &mut files, c, 0);
        let prefix = format!("{}/", c.display(path));
        return Some(ChartFiles { prefix, files });
    }
    let file = c.display(path);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(err) => {
            c.warn(file, None, format!("failed to read: {err}"));
            return None;
        }
    };
    c.scanned();
    unpack_chart(&bytes, &file, c)
}

/// Scans the chart folder or archive at `path` statically, with `user` values (the release's
/// values files and `set:`, merged) over its own.
pub(crate) fn scan_chart_at(path: &Path, user: Option<&Node>, c: &mut Collector) {
    if let Some(chart) = load_chart(path, c) {
        let inherited = user.map(|values| Inherited {
            values: Some(values),
            global: None,
        });
        scan_chart(&chart, inherited, c, 0);
    }
}

/// What rendering needs to know about a chart before running helm.
#[derive(Debug, Clone)]
pub(crate) struct ChartSummary {
    /// `name` of its `Chart.yaml`.
    pub name: String,
    /// Dependencies of its `Chart.yaml` that are not under `charts/`: (name, `Chart.yaml`
    /// as shown, line).
    pub missing: Vec<(String, Arc<str>, usize)>,
}

/// Reads the chart at `path` for its name and missing dependencies; warnings go to a
/// scratch collector (the static fallback reports them if it runs).
pub(crate) fn summarize(path: &Path, c: &Collector) -> Option<ChartSummary> {
    let mut scratch = Collector::new(&c.base);
    let chart = load_chart(path, &mut scratch)?;
    let meta = chart_meta(&chart, &mut scratch);
    let subcharts = subcharts(&chart, &mut scratch);
    let missing = meta
        .dependencies
        .iter()
        .filter(|(name, _, _)| !subcharts.iter().any(|(_, m)| &m.name == name))
        .map(|(name, _, line)| (name.clone(), chart.display("Chart.yaml"), *line))
        .collect();
    Some(ChartSummary {
        name: meta.name,
        missing,
    })
}

fn read_tree(
    dir: &Path,
    rel: &str,
    files: &mut BTreeMap<String, Vec<u8>>,
    c: &mut Collector,
    depth: usize,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).collect::<Vec<_>>(),
        Err(err) => {
            let file = c.display(dir);
            c.warn(file, None, format!("failed to list the folder: {err}"));
            return;
        }
    };
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = format!("{rel}{name}");
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() && depth < MAX_DEPTH * 4 {
            read_tree(&path, &format!("{rel}/"), files, c, depth + 1);
        } else if metadata.is_file() && wanted(&rel) {
            if metadata.len() > MAX_FILE {
                let file = c.display(&path);
                c.warn(
                    file,
                    None,
                    format!("larger than {MAX_FILE} bytes; not scanned"),
                );
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => {
                    files.insert(rel, bytes);
                }
                Err(err) => {
                    let file = c.display(&path);
                    c.warn(file, None, format!("failed to read: {err}"));
                }
            }
        }
    }
}

/// Reads a `.tgz` chart into memory: the files under the top folder that holds `Chart.yaml`.
fn unpack_chart(bytes: &[u8], shown: &str, c: &mut Collector) -> Option<ChartFiles> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let decoder = flate2::read::GzDecoder::new(bytes).take(MAX_ARCHIVE);
    let mut archive = tar::Archive::new(decoder);
    let result: std::io::Result<()> = (|| {
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() || entry.size() > MAX_FILE {
                continue;
            }
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let wanted = name.split_once('/').is_some_and(|(_, rel)| wanted(rel));
            if wanted {
                let mut content = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut content)?;
                all.insert(name, content);
            }
        }
        Ok(())
    })();
    if let Err(err) = result {
        c.warn(
            Arc::from(shown),
            None,
            format!("failed to read the chart archive: {err}; not scanned"),
        );
        return None;
    }
    let Some(top) = all
        .keys()
        .filter_map(|k| k.strip_suffix("/Chart.yaml"))
        .filter(|top| !top.contains('/'))
        .map(str::to_owned)
        .next()
    else {
        c.warn(
            Arc::from(shown),
            None,
            "not a Helm chart archive (no <name>/Chart.yaml); not scanned".to_owned(),
        );
        return None;
    };
    let strip = format!("{top}/");
    let files = all
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(&strip).map(|rel| (rel.to_owned(), v)))
        .collect();
    Some(ChartFiles {
        prefix: format!("{shown}!/{strip}"),
        files,
    })
}

/// What a chart says about itself.
#[derive(Debug, Default)]
struct ChartMeta {
    name: String,
    version: String,
    app_version: Option<String>,
    /// `condition:` of a dependency, by the key its values are under (alias, else name).
    conditions: BTreeMap<String, String>,
    /// (name, alias, line) of each dependency.
    dependencies: Vec<(String, Option<String>, usize)>,
}

fn chart_meta(chart: &ChartFiles, c: &mut Collector) -> ChartMeta {
    let docs = chart.yaml("Chart.yaml", c);
    let Some(doc) = docs.first() else {
        return ChartMeta::default();
    };
    let text = |key: &str| {
        doc.get(key)
            .and_then(Node::non_empty_text)
            .map(str::to_owned)
    };
    let mut dependencies = Vec::new();
    let mut conditions = BTreeMap::new();
    if let Some(Value::Seq(items)) = doc.get("dependencies").map(|d| &d.value) {
        for item in items {
            if let Some(name) = item.get("name").and_then(Node::non_empty_text) {
                let alias = item.get("alias").and_then(Node::non_empty_text);
                if let Some(condition) = item.get("condition").and_then(Node::non_empty_text) {
                    let key = alias.unwrap_or(name).to_owned();
                    conditions.insert(key, condition.trim().to_owned());
                }
                dependencies.push((name.to_owned(), alias.map(str::to_owned), item.line));
            }
        }
    }
    ChartMeta {
        name: text("name").unwrap_or_default(),
        version: text("version").unwrap_or_default(),
        app_version: text("appVersion"),
        conditions,
        dependencies,
    }
}

/// The values a parent chart hands to a subchart.
struct Inherited<'a> {
    /// The parent's values under the subchart's name or alias.
    values: Option<&'a Node>,
    /// The parent's `global`.
    global: Option<&'a Node>,
}

fn scan_chart(chart: &ChartFiles, parent: Option<Inherited>, c: &mut Collector, depth: usize) {
    let meta = chart_meta(chart, c);
    let values_file = chart.display("values.yaml");
    let mut values = chart
        .yaml("values.yaml", c)
        .into_iter()
        .next()
        .filter(Node::is_map)
        .unwrap_or_else(|| Node::empty_map(values_file.clone()));
    if let Some(parent) = &parent {
        if let Some(over) = parent.values.filter(|v| v.is_map()) {
            values.merge(over);
        }
        if let Some(global) = parent.global {
            let mut merged = values
                .get("global")
                .cloned()
                .unwrap_or_else(|| Node::empty_map(values_file.clone()));
            merged.merge(global);
            set(&mut values, "global", merged);
        }
    }
    let global_registry = values
        .path(["global", "imageRegistry"])
        .and_then(Node::non_empty_text);
    let map = MapContext { global_registry };
    let cx = Context {
        values: &values,
        chart_name: &meta.name,
        chart_version: &meta.version,
        app_version: meta.app_version.as_deref(),
        map,
    };

    // 1. Templates.
    let unresolved_before = c.unresolved.len();
    let mut read: Vec<String> = Vec::new();
    for (rel, bytes) in &chart.files {
        let is_template = rel.starts_with("templates/")
            && [".yaml", ".yml", ".tpl"].iter().any(|e| rel.ends_with(e));
        if is_template {
            let file = chart.display(rel);
            if let Some(text) = text_of(bytes.clone(), file.clone(), c) {
                scan_template(&text, file, &cx, &mut read, c);
            }
        }
    }

    // 2. Values, minus what templates read and what belongs to subcharts.
    let subcharts = subcharts(chart, c);
    let mut sub_keys: Vec<String> = Vec::new();
    for (_, sub_meta) in &subcharts {
        sub_keys.extend(aliases(&meta, &sub_meta.name));
    }
    let skip = |path: &str| {
        read.iter()
            .any(|r| r == path || r.strip_prefix(path).is_some_and(|s| s.starts_with('.')))
            || sub_keys.iter().any(|k| {
                path == k
                    || path
                        .strip_prefix(k.as_str())
                        .is_some_and(|s| s.starts_with('.'))
            })
    };
    let label = if meta.name.is_empty() {
        "values ".to_owned()
    } else {
        format!("{} values ", meta.name)
    };
    // A value is only taken as written when nothing in the chart may rewrite it: no image
    // line of its templates was left unresolved and no other global registry is merged in.
    let blocked = match c.unresolved.get(unresolved_before) {
        _ if c.trust_values => None,
        Some(u) => Some(format!(
            "the chart's templates compute image names that discovery cannot evaluate \
             (first at {}:{}); render the chart with helm",
            u.file, u.line
        )),
        None => ["registry", "image.registry"]
            .iter()
            .find(|k| {
                values
                    .path(std::iter::once("global").chain(k.split('.')))
                    .and_then(Node::non_empty_text)
                    .is_some()
            })
            .map(|k| {
                format!(
                    "the chart merges `global.{k}` into its images in its templates; \
                     render the chart with helm"
                )
            }),
    };
    let how = Walk {
        label: &label,
        map,
        skip: &skip,
        values: true,
        blocked: blocked.as_deref(),
    };
    k8s::walk(&values, &mut String::new(), &how, c);

    // 3. CRDs.
    for (rel, bytes) in &chart.files {
        if rel.starts_with("crds/") && [".yaml", ".yml", ".json"].iter().any(|e| rel.ends_with(e)) {
            let file = chart.display(rel);
            if let Some(text) = text_of(bytes.clone(), file.clone(), c) {
                k8s::scan_text(&text, file, c);
            }
        }
    }

    // 4. Subcharts, once per alias.
    if depth >= MAX_DEPTH && !subcharts.is_empty() {
        c.warn(
            chart.display("charts/"),
            None,
            format!("subcharts nested deeper than {MAX_DEPTH}; not scanned"),
        );
        return;
    }
    for (sub, sub_meta) in &subcharts {
        for alias in aliases(&meta, &sub_meta.name) {
            if !c.trust_values && disabled(&meta, &alias, &values) {
                continue;
            }
            let inherited = Inherited {
                values: values.get(&alias),
                global: values.get("global"),
            };
            scan_chart(sub, Some(inherited), c, depth + 1);
        }
    }
    for (name, _, line) in &meta.dependencies {
        if !subcharts.iter().any(|(_, m)| &m.name == name) {
            c.warn(
                chart.display("Chart.yaml"),
                Some(*line),
                format!(
                    "dependency `{name}` is not under charts/ (run `helm dependency build`); \
                     its images are not discovered"
                ),
            );
        }
    }
}

/// Whether the subchart under `key` is switched off by its `condition:` (Helm: the first of
/// its comma-separated paths that is set to a boolean decides).
fn disabled(meta: &ChartMeta, key: &str, values: &Node) -> bool {
    let Some(condition) = meta.conditions.get(key) else {
        return false;
    };
    condition
        .split(',')
        .find_map(|path| {
            let node = values.path(path.trim().split('.'))?;
            match node.as_text() {
                Some("true") => Some(false),
                Some("false") => Some(true),
                _ => None,
            }
        })
        .unwrap_or(false)
}

/// The value keys a subchart named `name` is configured under: its aliases in the parent's
/// `dependencies`, else its name.
fn aliases(parent: &ChartMeta, name: &str) -> Vec<String> {
    let listed: Vec<String> = parent
        .dependencies
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(n, alias, _)| alias.clone().unwrap_or_else(|| n.clone()))
        .collect();
    if listed.is_empty() {
        vec![name.to_owned()]
    } else {
        listed
    }
}

/// The subcharts under `charts/`: folders with a `Chart.yaml`, and `.tgz` archives.
fn subcharts(chart: &ChartFiles, c: &mut Collector) -> Vec<(ChartFiles, ChartMeta)> {
    let mut out = Vec::new();
    let folders: Vec<String> = chart
        .files
        .keys()
        .filter_map(|k| k.strip_prefix("charts/")?.strip_suffix("/Chart.yaml"))
        .filter(|d| !d.contains('/'))
        .map(str::to_owned)
        .collect();
    for folder in folders {
        let strip = format!("charts/{folder}/");
        let files = chart
            .files
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&strip)
                    .map(|rel| (rel.to_owned(), v.clone()))
            })
            .collect();
        out.push(ChartFiles {
            prefix: format!("{}{strip}", chart.prefix),
            files,
        });
    }
    for (rel, bytes) in &chart.files {
        let archive = rel.strip_prefix("charts/").is_some_and(|name| {
            !name.contains('/') && (name.ends_with(".tgz") || name.ends_with(".tar.gz"))
        });
        if archive {
            c.scanned();
            let shown = chart.display(rel);
            out.extend(unpack_chart(bytes, &shown, c));
        }
    }
    out.into_iter()
        .map(|sub| {
            let meta = chart_meta(&sub, c);
            (sub, meta)
        })
        .collect()
}

fn set(map: &mut Node, key: &str, node: Node) {
    if let Value::Map(entries) = &mut map.value {
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = node,
            None => entries.push((key.to_owned(), node)),
        }
    }
}

/// Resolves every `image:` line of a template; `read` collects the values paths read by lines
/// that resolved.
fn scan_template(
    text: &str,
    file: Arc<str>,
    cx: &Context,
    read: &mut Vec<String>,
    c: &mut Collector,
) {
    let lines: Vec<&str> = text.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(value) = image_line_value(line) else {
            continue;
        };
        let mut value = strip_comment(value).trim();
        if value.is_empty() {
            // `image:` with the action on the next line (`{{- include ... | nindent 10 }}`).
            match lines.get(index + 1).map(|l| l.trim()) {
                Some(next) if next.starts_with("{{") => value = next,
                _ => continue,
            }
        }
        let source = Source {
            file: file.clone(),
            line: Some(index + 1),
            what: "template".to_owned(),
        };
        if !value.contains("{{") {
            c.text(template::unquote(value), source, Certainty::Certain);
            continue;
        }
        let rendered = match template::render(value, cx) {
            Ok(r) => r,
            Err(reason) => {
                c.unresolved(&source, value, reason);
                continue;
            }
        };
        match rendered.text.parse::<ImageRef>() {
            Ok(reference) => {
                read.extend(rendered.read);
                c.reference(reference, source);
            }
            Err(err) => {
                let reason = if rendered.missing.is_empty() {
                    format!("renders `{}`: {err}", rendered.text)
                } else {
                    format!(
                        "{} not set in the chart's values (renders `{}`)",
                        rendered.missing.join(", "),
                        rendered.text
                    )
                };
                c.unresolved(&source, value, reason);
            }
        }
    }
}

/// The text after `image:` when `line` is an `image` key (possibly a list item).
fn image_line_value(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    while let Some(r) = rest.strip_prefix('-') {
        if !r.starts_with([' ', '\t']) {
            return None;
        }
        rest = r.trim_start();
    }
    let rest = ["image", "\"image\"", "'image'"]
        .iter()
        .find_map(|k| rest.strip_prefix(k))?;
    let rest = rest.trim_start_matches([' ', '\t']).strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

/// `value` without a YAML comment: a `#` after whitespace, outside quotes and `{{ }}`.
fn strip_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    let (mut single, mut double, mut action) = (false, false, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                action += 1;
                i += 1;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') && action > 0 => {
                action -= 1;
                i += 1;
            }
            b'\'' if !double && action == 0 => single = !single,
            b'"' if !single && action == 0 => double = !double,
            b'#' if !single
                && !double
                && action == 0
                && (i == 0 || bytes[i - 1].is_ascii_whitespace()) =>
            {
                return &value[..i];
            }
            _ => {}
        }
        i += 1;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lines_are_recognised() {
        assert_eq!(image_line_value("  image: nginx"), Some(" nginx"));
        assert_eq!(image_line_value("- image: \"a\""), Some(" \"a\""));
        assert_eq!(image_line_value("  - - image:"), Some(""));
        assert_eq!(image_line_value("imagePullPolicy: Always"), None);
        assert_eq!(image_line_value("image:nginx"), None);
        assert_eq!(image_line_value("  # image: x"), None);
        assert_eq!(image_line_value("  'image' : x"), Some(" x"));
    }

    #[test]
    fn comments_are_stripped_outside_quotes_and_actions() {
        assert_eq!(strip_comment(" nginx:1 # pinned"), " nginx:1 ");
        assert_eq!(strip_comment(" \"a#b\" # c"), " \"a#b\" ");
        assert_eq!(
            strip_comment(" {{ .Values.x # y }}"),
            " {{ .Values.x # y }}"
        );
        assert_eq!(strip_comment(" a#b"), " a#b");
    }
}
