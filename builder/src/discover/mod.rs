//! Image discovery: the container images that manifests, Helm charts and image lists refer to.
//!
//! Listing images by hand is what makes air-gapped deliveries fail in the field: one sidecar
//! forgotten and a pod never starts. `discover:` in the spec names folders and files;
//! [`plan`] scans them, drops what `exclude:` names, and joins the result with `images:`:
//!
//! - Kubernetes YAML, multi-document ([`k8s`]): every `image:` string anywhere (pod specs of
//!   every workload kind, CronJob nesting, init and ephemeral containers, CRDs and operator
//!   configs), and `image: {registry, repository, tag, digest}` maps.
//! - Helm charts ([`render`]): a folder with `Chart.yaml`, or a packaged `.tgz`, rendered by
//!   the user's `helm template` (with the values of the spec's `charts:` entries,
//!   [`charts`]) and scanned as Kubernetes YAML; without helm, or when a dependency is missing
//!   from `charts/`, analysed statically ([`helm`]), which never guesses:
//!   `values.yaml` conventions (`image: "repo:tag"`, image maps, `global.imageRegistry`,
//!   the tag defaulting to `appVersion`), `image:` lines of `templates/` with their
//!   `{{ .Values.x }}` references resolved ([`template`]), `crds/`, and subcharts under
//!   `charts/` (folders and `.tgz`) with the parent's values and `global` merged in. Values
//!   are taken as written only with a tag or digest and when no template line was left
//!   unresolved; the rest is [`Unresolved`].
//! - Container `args`/`command` items and `env` values holding a reference with a tag or
//!   digest ([`k8s`]).
//! - Image lists ([`list`]): one reference a line, `#` comments; `.txt` and `.list` files, or
//!   any other file named directly in `discover:`.
//!
//! References are normalised like containerd ([`ImageRef`]). Every reference keeps where it
//! came from ([`Source`], `file:line`). What cannot be read is a [`Warning`] (the rest is
//! still scanned) and what a chart leaves to install time is [`Unresolved`]: neither is ever
//! dropped silently, and `--strict` turns both into an error ([`ImagePlan::check_strict`]).

/// The `charts:` entries of the spec (types live with the spec, which discovery reads).
pub use crate::spec::charts;
pub mod helm;
pub mod k8s;
pub mod list;
pub mod pattern;
pub mod render;
pub mod template;
pub mod yaml;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::reference::ImageRef;
use crate::spec::{ImageSource, ImageSpec, Spec};

pub use pattern::{ImagePattern, PatternError};

/// What stops discovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A folder or file named in `discover:` could not be read.
    #[error("failed to read {}", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `helm` that `--helm` or `AIRLOCK_HELM` names does not run.
    #[error(transparent)]
    Helm(#[from] render::Error),
    /// `--strict` and discovery has warnings or unresolved references.
    #[error("discovery is incomplete (--strict): {first}{}", more(*.count))]
    Strict {
        /// The first problem, as `file:line: message`.
        first: String,
        /// How many problems in all.
        count: usize,
    },
}

fn more(count: usize) -> String {
    match count {
        0 | 1 => String::new(),
        2 => " (and 1 more problem)".to_owned(),
        n => format!(" (and {} more problems)", n - 1),
    }
}

/// A specialised `Result` for discovery.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a reference was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Source {
    /// The file, relative to the spec's folder when inside it.
    pub file: Arc<str>,
    /// 1-based line; `None` for an `images:` entry of the spec.
    pub line: Option<usize>,
    /// What was there: a YAML path such as `Deployment/web spec.template.spec.containers[0].image`,
    /// `images[2]`, a template line or `list`.
    pub what: String,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => write!(f, "{} {}", self.file, self.what),
        }
    }
}

/// Something discovery could not read; the rest was still scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file, relative to the spec's folder when inside it.
    pub file: Arc<str>,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// An image reference that is only known at install time (a template value a chart leaves
/// open, a `${VAR}`): listed so that someone adds it to `images:` or the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    /// The file, relative to the spec's folder when inside it.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// The text as written.
    pub text: String,
    /// Why it could not be resolved.
    pub reason: String,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file, self.line, self.text, self.reason
        )
    }
}

/// How sure a field is to hold an image reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Certainty {
    /// An `image:` field or a line of an image list: text that is not a reference is a
    /// warning.
    Certain,
    /// A field whose name only suggests an image (`initImage`, `sidecar_image`): text that is
    /// not a reference is ignored.
    Guess,
}

/// Everything found while scanning: references with their sources, warnings, unresolved.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    found: BTreeMap<ImageRef, Vec<Source>>,
    unresolved: Vec<Unresolved>,
    warnings: Vec<Warning>,
    files: usize,
    base: PathBuf,
    /// Top-level charts met while walking `discover:` paths, rendered or analysed after.
    charts: Vec<PathBuf>,
    /// Charts already taken by `charts:` entries (canonical paths).
    claimed: HashSet<PathBuf>,
    /// `--all-values`: take chart values as written even where templates may rewrite them.
    trust_values: bool,
}

impl Collector {
    fn new(base: &Path) -> Collector {
        Collector {
            base: base.to_owned(),
            ..Collector::default()
        }
    }

    /// `path` as shown to users: relative to the spec's folder when inside it.
    pub(crate) fn display(&self, path: &Path) -> Arc<str> {
        let shown = path.strip_prefix(&self.base).unwrap_or(path);
        Arc::from(shown.display().to_string())
    }

    /// Takes everything `other` found.
    pub(crate) fn merge(&mut self, other: Collector) {
        for (reference, sources) in other.found {
            for source in sources {
                self.reference(reference.clone(), source);
            }
        }
        self.unresolved.extend(other.unresolved);
        self.warnings.extend(other.warnings);
        self.files += other.files;
    }

    /// Queues the chart folder or archive at `path`, unless a `charts:` entry has it.
    fn chart(&mut self, path: &Path) {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if !self.claimed.contains(&real) && !self.charts.iter().any(|p| p == path) {
            self.charts.push(path.to_owned());
        }
    }

    /// Counts a scanned file.
    pub(crate) fn scanned(&mut self) {
        self.files += 1;
    }

    /// Records text found in an image field: a reference, an unresolved template or
    /// variable, or (when `certainty` says so) a warning.
    pub(crate) fn text(&mut self, text: &str, source: Source, certainty: Certainty) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if is_templated(text) {
            let reason = "a template or variable that only the install renders".to_owned();
            self.unresolved(&source, text, reason);
            return;
        }
        match text.parse::<ImageRef>() {
            Ok(reference) => self.reference(reference, source),
            Err(err) if certainty == Certainty::Certain => self.warn(
                source.file.clone(),
                source.line,
                format!("{} ({})", err, source.what),
            ),
            Err(err) => tracing::debug!(%source, %err, "not an image reference"),
        }
    }

    /// Records a reference.
    pub(crate) fn reference(&mut self, reference: ImageRef, source: Source) {
        let sources = self.found.entry(reference).or_default();
        if !sources.contains(&source) {
            sources.push(source);
        }
    }

    /// Records an unresolved reference.
    pub(crate) fn unresolved(&mut self, source: &Source, text: &str, reason: String) {
        self.unresolved.push(Unresolved {
            file: source.file.clone(),
            line: source.line.unwrap_or(0),
            text: text.to_owned(),
            reason,
        });
    }

    /// Records a warning.
    pub(crate) fn warn(&mut self, file: Arc<str>, line: Option<usize>, message: String) {
        self.warnings.push(Warning {
            file,
            line,
            message,
        });
    }
}

/// Whether `text` is a template or a shell-style variable rather than a reference.
pub(crate) fn is_templated(text: &str) -> bool {
    text.contains("{{") || text.contains("${") || text.contains("$(")
}

/// What discovery found in the `discover:` paths, before `images:` is joined in.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Every reference found, with where; sorted, each once.
    pub found: Vec<(ImageRef, Vec<Source>)>,
    /// References only known at install time.
    pub unresolved: Vec<Unresolved>,
    /// What could not be read.
    pub warnings: Vec<Warning>,
    /// How many files were read.
    pub files: usize,
    /// Every chart discovery met, and how it was read.
    pub charts: Vec<ChartReport>,
    /// `--all-values`: image values of rendered charts that their rendering did not use.
    pub values_only: Vec<(ImageRef, Vec<Source>)>,
}

/// How a chart was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderedBy {
    /// `helm template`.
    Helm,
    /// The static analysis of [`helm`].
    Static,
}

/// One chart discovery read: a `charts:` entry or a chart met under `discover:`.
#[derive(Debug, Clone, Serialize)]
pub struct ChartReport {
    /// The chart folder or archive, as shown.
    pub path: Arc<str>,
    /// The release name it was rendered as.
    pub release: String,
    /// The release's namespace.
    pub namespace: String,
    /// How it was read.
    pub rendered_by: RenderedBy,
    /// The version of the helm that rendered it.
    pub helm_version: Option<String>,
    /// Why it was analysed statically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How discovery runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The helm to render charts with (`--helm`); `None`: `AIRLOCK_HELM`, else `helm` on
    /// `PATH`, else static analysis.
    pub helm: Option<PathBuf>,
    /// Never run helm: analyse every chart statically.
    pub no_helm: bool,
    /// Also list the image values of rendered charts that the rendering did not use
    /// (disabled components).
    pub all_values: bool,
}

/// Scans `paths` (folders or files) statically; `base` is the spec's folder, for the paths
/// shown.
pub fn discover(paths: &[PathBuf], base: &Path) -> Result<Discovery> {
    discover_with(paths, &[], base, None, false)
}

/// Scans `paths` and `charts`; charts are rendered with `helm` when given.
pub fn discover_with(
    paths: &[PathBuf],
    charts: &[charts::ChartSpec],
    base: &Path,
    helm: Option<&render::Helm>,
    all_values: bool,
) -> Result<Discovery> {
    let mut collector = Collector::new(base);
    let mut visited = HashSet::new();
    for chart in charts {
        let real = std::fs::canonicalize(&chart.path).map_err(|source| Error::Read {
            path: chart.path.clone(),
            source,
        })?;
        collector.claimed.insert(real);
    }
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            std::fs::read_dir(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
        }
        scan_path(path, true, &mut collector, &mut visited);
    }
    let mut jobs: Vec<(PathBuf, Option<&charts::ChartSpec>)> =
        charts.iter().map(|c| (c.path.clone(), Some(c))).collect();
    jobs.extend(
        std::mem::take(&mut collector.charts)
            .into_iter()
            .map(|p| (p, None)),
    );
    let (reports, values_only) = read_charts(&jobs, helm, all_values, &mut collector);
    Ok(Discovery {
        found: collector
            .found
            .into_iter()
            .map(|(reference, mut sources)| {
                sources.sort();
                (reference, sources)
            })
            .collect(),
        unresolved: collector.unresolved,
        warnings: collector.warnings,
        files: collector.files,
        charts: reports,
        values_only,
    })
}

/// Renders or analyses each chart: `helm template` in parallel when `helm` is given and the
/// chart's dependencies are all under `charts/`, else statically.
fn read_charts(
    jobs: &[(PathBuf, Option<&charts::ChartSpec>)],
    helm: Option<&render::Helm>,
    all_values: bool,
    c: &mut Collector,
) -> (Vec<ChartReport>, Vec<(ImageRef, Vec<Source>)>) {
    struct Prepared {
        release: String,
        namespace: String,
        args: Option<Vec<String>>,
        reason: Option<String>,
    }
    let prepared: Vec<Prepared> = jobs
        .iter()
        .map(|(path, spec)| {
            let summary = helm::summarize(path, c);
            let name = summary.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            let release = spec
                .and_then(|s| s.release.as_ref())
                .map(|r| r.as_str().to_owned())
                .unwrap_or_else(|| release_of(&name));
            let namespace = spec.map_or("default", |s| s.namespace.as_str()).to_owned();
            let reason = match (&summary, helm) {
                (_, None) => Some("no helm found (--helm, AIRLOCK_HELM, PATH)".to_owned()),
                (None, _) => Some("not a readable chart".to_owned()),
                (Some(s), _) if !s.missing.is_empty() => Some(format!(
                    "dependency {} is not under charts/ (run `helm dependency build`)",
                    s.missing
                        .iter()
                        .map(|(n, _, _)| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => None,
            };
            let args = reason
                .is_none()
                .then(|| render::Helm::template_args(&release, path, *spec));
            Prepared {
                release,
                namespace,
                args,
                reason,
            }
        })
        .collect();

    // helm runs in parallel: each run is mostly waiting for a process.
    let base = c.base.clone();
    let outputs: Vec<Option<std::result::Result<String, String>>> = match helm {
        None => prepared.iter().map(|_| None).collect(),
        Some(helm) => std::thread::scope(|scope| {
            let handles: Vec<_> = prepared
                .iter()
                .map(|p| {
                    p.args.as_ref().map(|args| {
                        let base = &base;
                        scope.spawn(move || helm.template(args, base))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("helm runner panicked".to_owned()))
                    })
                })
                .collect()
        }),
    };

    let mut reports = Vec::new();
    let mut values_only: BTreeMap<ImageRef, Vec<Source>> = BTreeMap::new();
    for (((path, spec), p), output) in jobs.iter().zip(prepared).zip(outputs) {
        let shown = c.display(path);
        let user = spec.map(|s| user_values(s, c));
        let mut reason = p.reason;
        match output {
            Some(Ok(text)) => {
                let before: HashSet<ImageRef> = c.found.keys().cloned().collect();
                let mut scratch = Collector::new(&c.base);
                render::scan_rendered(&text, &shown, !path.is_dir(), &mut scratch);
                let rendered: HashSet<ImageRef> = scratch.found.keys().cloned().collect();
                c.merge(scratch);
                if all_values {
                    let mut values = Collector::new(&c.base);
                    values.trust_values = true;
                    helm::scan_chart_at(path, user.as_ref(), &mut values);
                    for (reference, sources) in values.found {
                        if !rendered.contains(&reference) && !before.contains(&reference) {
                            values_only.entry(reference).or_default().extend(sources);
                        }
                    }
                }
            }
            Some(Err(message)) => {
                c.warn(
                    shown.clone(),
                    None,
                    format!("helm template failed: {message}; the chart is analysed statically"),
                );
                reason = Some("helm template failed".to_owned());
            }
            None => {}
        }
        let rendered_by = if reason.is_none() {
            RenderedBy::Helm
        } else {
            helm::scan_chart_at(path, user.as_ref(), c);
            RenderedBy::Static
        };
        reports.push(ChartReport {
            path: shown,
            release: p.release,
            namespace: p.namespace,
            rendered_by,
            helm_version: (rendered_by == RenderedBy::Helm)
                .then(|| helm.map(|h| h.version.clone()))
                .flatten(),
            reason,
        });
    }
    (reports, values_only.into_iter().collect())
}

/// The default release name of a chart: its name, made a valid release name.
fn release_of(name: &str) -> String {
    let cleaned: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "release".to_owned()
    } else {
        trimmed.chars().take(53).collect()
    }
}

/// A `charts:` entry's values files and `set:`, merged in order, for the static analysis.
fn user_values(spec: &charts::ChartSpec, c: &mut Collector) -> yaml::Node {
    let mut merged =
        yaml::Node::empty_map(c.display(&spec.values.first().cloned().unwrap_or_default()));
    for file in &spec.values {
        let shown = c.display(file);
        let Some(text) = read_text(file, c) else {
            continue;
        };
        let (docs, errors) = yaml::parse_documents(&text, &shown);
        for error in errors {
            c.warn(
                shown.clone(),
                Some(error.line),
                format!("failed to parse YAML: {}", error.message),
            );
        }
        if let Some(doc) = docs.into_iter().next().filter(yaml::Node::is_map) {
            merged.merge(&doc);
        }
    }
    let spec_file: Arc<str> = Arc::from("airlock.yaml");
    for (key, value) in &spec.set {
        if key.as_str().contains('[') {
            continue;
        }
        let leaf = yaml::Node {
            file: spec_file.clone(),
            line: 1,
            value: if value.is_string {
                yaml::Value::Str(value.text.clone())
            } else if value.text == "null" {
                yaml::Value::Null
            } else {
                yaml::Value::Other(value.text.clone())
            },
        };
        let over = key.keys().rev().fold(leaf, |inner, k| yaml::Node {
            file: spec_file.clone(),
            line: 1,
            value: yaml::Value::Map(vec![(k.to_owned(), inner)]),
        });
        merged.merge(&over);
    }
    merged
}

/// What kind of file discovery reads a path as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Yaml,
    ChartArchive,
    List,
    Other,
}

fn file_kind(path: &Path, named: bool) -> FileKind {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "yaml" | "yml" | "json" => FileKind::Yaml,
        "tgz" => FileKind::ChartArchive,
        "gz" if name.ends_with(".tar.gz") => FileKind::ChartArchive,
        "txt" | "list" => FileKind::List,
        _ if named => FileKind::List,
        _ => FileKind::Other,
    }
}

/// Scans one path: a chart folder, another folder (recursively, in name order, skipping
/// hidden entries), or a file by its kind. `named` is true for paths written in the spec.
fn scan_path(path: &Path, named: bool, c: &mut Collector, visited: &mut HashSet<PathBuf>) {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(err) => {
            let file = c.display(path);
            c.warn(file, None, format!("failed to read: {err}"));
            return;
        }
    };
    if metadata.is_dir() {
        // Symlinked folders may loop.
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if !visited.insert(real) {
            return;
        }
        if path.join("Chart.yaml").is_file() {
            c.chart(path);
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(err) => {
                let file = c.display(path);
                c.warn(file, None, format!("failed to list the folder: {err}"));
                return;
            }
        };
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden {
                scan_path(&entry, false, c, visited);
            }
        }
        return;
    }
    if named && path.file_name().is_some_and(|n| n == "Chart.yaml") {
        if let Some(chart) = path.parent() {
            c.chart(chart);
            return;
        }
    }
    match file_kind(path, named) {
        FileKind::Yaml => k8s::scan_file(path, c),
        FileKind::ChartArchive => c.chart(path),
        FileKind::List => list::scan_file(path, c),
        FileKind::Other => tracing::debug!(path = %path.display(), "not scanned for images"),
    }
}

/// Reads a text file for scanning, turning failures into warnings.
pub(crate) fn read_text(path: &Path, c: &mut Collector) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => text_of(bytes, c.display(path), c),
        Err(err) => {
            let file = c.display(path);
            c.warn(file, None, format!("failed to read: {err}"));
            None
        }
    }
}

/// Decodes UTF-8 text, warning when it is not.
pub(crate) fn text_of(bytes: Vec<u8>, file: Arc<str>, c: &mut Collector) -> Option<String> {
    c.scanned();
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(_) => {
            c.warn(file, None, "not UTF-8 text; not scanned".to_owned());
            None
        }
    }
}

// -------------------------------------------------------------------------------------------
// Joining `images:`, discovery and `exclude:`.
// -------------------------------------------------------------------------------------------

/// One image the build captures.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedImage {
    /// The name the installer serves it under.
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    /// Where it comes from (`None`: its registry).
    #[serde(skip)]
    pub from: Option<ImageSource>,
    /// Whether it is an `images:` entry of the spec.
    pub listed: bool,
    /// Where it was named: the `images:` entry and every discovered occurrence.
    pub sources: Vec<Source>,
}

/// A discovered reference that `exclude:` dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    /// The reference.
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    /// The `exclude:` entry that dropped it.
    pub pattern: String,
    /// Where it was found.
    pub sources: Vec<Source>,
}

/// What a build captures: `images:` joined with discovery, minus `exclude:`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImagePlan {
    /// The images to capture, sorted by reference.
    pub images: Vec<PlannedImage>,
    /// Discovered references that `exclude:` dropped.
    pub excluded: Vec<Excluded>,
    /// References only known at install time: not captured.
    pub unresolved: Vec<Unresolved>,
    /// What discovery could not read.
    pub warnings: Vec<Warning>,
    /// How many files discovery read.
    pub files_scanned: usize,
    /// Every chart discovery read, and whether helm rendered it.
    pub charts: Vec<ChartReport>,
    /// `--all-values`: image values of rendered charts that the rendering did not use
    /// (disabled components); not captured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values_only: Vec<ValuesOnly>,
}

/// An image a rendered chart's values name but its rendering does not use.
#[derive(Debug, Clone, Serialize)]
pub struct ValuesOnly {
    /// The reference as the values spell it.
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    /// Where.
    pub sources: Vec<Source>,
}

impl ImagePlan {
    /// The `images:`-style entries to capture.
    pub fn image_specs(&self) -> Vec<ImageSpec> {
        self.images
            .iter()
            .map(|i| ImageSpec {
                reference: i.reference.clone(),
                from: i.from.clone(),
            })
            .collect()
    }

    /// Fails when there is any warning or unresolved reference (`--strict`).
    pub fn check_strict(&self) -> Result<()> {
        let count = self.warnings.len() + self.unresolved.len();
        let first = self.warnings.first().map(|w| w.to_string()).or_else(|| {
            self.unresolved
                .first()
                .map(|u| format!("unresolved image reference {u}"))
        });
        match first {
            None => Ok(()),
            Some(first) => Err(Error::Strict { first, count }),
        }
    }
}

/// The text `airlock images` prints: one line per image (reference, then where it came
/// from), the excluded and the unresolved references, and a count.
impl fmt::Display for ImagePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources = |list: &[Source]| {
            list.iter()
                .map(Source::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let width = self
            .images
            .iter()
            .map(|i| i.reference.to_string().len())
            .max()
            .unwrap_or(0)
            .min(48);
        let by = |how: RenderedBy| {
            self.charts
                .iter()
                .filter(|c| c.rendered_by == how)
                .collect::<Vec<_>>()
        };
        let (helm, analysed) = (by(RenderedBy::Helm), by(RenderedBy::Static));
        if !helm.is_empty() {
            let version = helm[0].helm_version.as_deref().unwrap_or("unknown");
            let list: Vec<String> = helm
                .iter()
                .map(|c| {
                    format!(
                        "{} (release {}, namespace {})",
                        c.path, c.release, c.namespace
                    )
                })
                .collect();
            writeln!(f, "rendered by helm {version}: {}", list.join(", "))?;
        }
        if !analysed.is_empty() {
            let list: Vec<String> = analysed
                .iter()
                .map(|c| match &c.reason {
                    Some(reason) => format!("{} ({reason})", c.path),
                    None => c.path.to_string(),
                })
                .collect();
            writeln!(f, "analysed statically: {}", list.join(", "))?;
        }
        if !self.charts.is_empty() {
            writeln!(f)?;
        }
        for image in &self.images {
            let name = image.reference.to_string();
            writeln!(f, "{name:width$}  {}", sources(&image.sources))?;
        }
        if !self.excluded.is_empty() {
            writeln!(f, "\nexcluded:")?;
            for e in &self.excluded {
                let name = e.reference.to_string();
                writeln!(f, "  {name}  by `{}`  {}", e.pattern, sources(&e.sources))?;
            }
        }
        if !self.values_only.is_empty() {
            writeln!(
                f,
                "\nin the values of rendered charts but not rendered (disabled?), not captured:"
            )?;
            for v in &self.values_only {
                writeln!(f, "  {}  {}", v.reference, sources(&v.sources))?;
            }
        }
        if !self.unresolved.is_empty() {
            writeln!(
                f,
                "\nunresolved, not captured (list them in `images:` or set the chart's values):"
            )?;
            for u in &self.unresolved {
                writeln!(f, "  {u}")?;
            }
        }
        let listed = self.images.iter().filter(|i| i.listed).count();
        writeln!(
            f,
            "\n{} images ({listed} listed, {} discovered only; {} files scanned), {} excluded, \
             {} unresolved, {} warnings",
            self.images.len(),
            self.images.len() - listed,
            self.files_scanned,
            self.excluded.len(),
            self.unresolved.len(),
            self.warnings.len()
        )
    }
}

/// The name under which two references collide in an installer: a tag names one image per
/// (registry, repository); a digest-only reference is its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum NameKey {
    Tag(String, String, String),
    Digest(ImageRef),
}

fn name_key(r: &ImageRef) -> NameKey {
    match r.tag() {
        Some(tag) => NameKey::Tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            tag.to_owned(),
        ),
        None => NameKey::Digest(r.clone()),
    }
}

/// Runs discovery for `spec` and joins it with `images:`: an image listed in `images:` wins
/// over a discovered one of the same name (it may have a `from`); among discovered ones of the
/// same tag, the digest-pinned one wins; `exclude:` drops discovered references only.
pub fn plan(spec: &Spec) -> Result<ImagePlan> {
    plan_with(spec, &Options::default())
}

/// [`plan`] with a choice of helm and `--all-values`.
pub fn plan_with(spec: &Spec, options: &Options) -> Result<ImagePlan> {
    let discovery = if spec.discover.is_empty() && spec.charts.is_empty() {
        Discovery::default()
    } else {
        let helm = if options.no_helm {
            None
        } else {
            render::Helm::find(options.helm.as_deref())?
        };
        discover_with(
            &spec.discover,
            &spec.charts,
            &spec.base_dir,
            helm.as_ref(),
            options.all_values,
        )?
    };
    Ok(join(spec, discovery))
}

fn join(spec: &Spec, discovery: Discovery) -> ImagePlan {
    let spec_file: Arc<str> = Arc::from(
        spec.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.path.display().to_string()),
    );
    let Discovery {
        found,
        unresolved,
        mut warnings,
        files,
        charts,
        values_only,
    } = discovery;

    // exclude:
    let mut used = vec![false; spec.exclude.len()];
    let mut excluded = Vec::new();
    let mut kept: BTreeMap<NameKey, (ImageRef, Vec<Source>)> = BTreeMap::new();
    for (reference, sources) in found {
        if let Some(i) = spec.exclude.iter().position(|p| p.matches(&reference)) {
            used[i] = true;
            excluded.push(Excluded {
                reference,
                pattern: spec.exclude[i].to_string(),
                sources,
            });
            continue;
        }
        match kept.entry(name_key(&reference)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((reference, sources));
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let (existing, existing_sources) = o.get_mut();
                match (existing.digest(), reference.digest()) {
                    (None, Some(_)) => *existing = reference,
                    (Some(a), Some(b)) if a != b => {
                        let first = sources.first().cloned();
                        warnings.push(Warning {
                            file: first
                                .as_ref()
                                .map_or_else(|| spec_file.clone(), |s| s.file.clone()),
                            line: first.and_then(|s| s.line),
                            message: format!(
                                "{reference} pins another digest than {existing} for the same tag; \
                                 only {existing} is captured"
                            ),
                        });
                    }
                    _ => {}
                }
                existing_sources.extend(sources);
            }
        }
    }
    for (pattern, used) in spec.exclude.iter().zip(used) {
        if !used {
            warnings.push(Warning {
                file: spec_file.clone(),
                line: None,
                message: format!("exclude `{pattern}` matches no discovered image reference"),
            });
        }
    }

    // images: wins over discovery.
    let mut images: Vec<PlannedImage> = spec
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let mut sources = vec![Source {
                file: spec_file.clone(),
                line: None,
                what: format!("images[{i}]"),
            }];
            if let Some((_, found)) = kept.remove(&name_key(&image.reference)) {
                sources.extend(found);
            }
            PlannedImage {
                reference: image.reference.clone(),
                from: image.from.clone(),
                listed: true,
                sources,
            }
        })
        .collect();
    images.extend(kept.into_values().map(|(reference, mut sources)| {
        sources.sort();
        sources.dedup();
        PlannedImage {
            reference,
            from: None,
            listed: false,
            sources,
        }
    }));
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    ImagePlan {
        images,
        excluded,
        unresolved,
        warnings,
        files_scanned: files,
        charts,
        values_only: values_only
            .into_iter()
            .map(|(reference, sources)| ValuesOnly { reference, sources })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
