//! Rendering Helm charts with the user's `helm`, so discovery sees what the cluster will run.
//!
//! Real charts compute image names in named templates, `merge`s, `printf "v%s"`, `with`
//! blocks and helpers: only Helm's own engine gets every one right. When a `helm` is there
//! ([`Helm::find`]: `--helm PATH`, else `AIRLOCK_HELM`, else `helm` on `PATH`), every chart
//! discovery meets (a `charts:` entry, or a chart folder or `.tgz` under `discover:`) is run
//! through
//!
//! ```text
//! helm template RELEASE CHART --namespace NS [--values FILE]... [--set K=V]... --include-crds
//! ```
//!
//! and its multi-document output is scanned like any Kubernetes YAML ([`super::k8s`]). Only
//! these flags are used, so helm 3 and helm 4 both work. Subcharts come from the chart's
//! `charts/` folder; a dependency missing there, or a failing `helm`, leaves that chart to the
//! static analysis of [`super::helm`], which never guesses (see there).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::charts::ChartSpec;
use super::{Collector, Source};

/// What stops rendering before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `helm` that `--helm` or `AIRLOCK_HELM` names does not run.
    #[error("failed to run `{} version` (named by {by})", .path.display())]
    Run {
        /// The program.
        path: PathBuf,
        /// `--helm` or `AIRLOCK_HELM`.
        by: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It ran, but `helm version` failed.
    #[error("`{} version` (named by {by}) failed: {stderr}", .path.display())]
    Version {
        /// The program.
        path: PathBuf,
        /// `--helm` or `AIRLOCK_HELM`.
        by: &'static str,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// A `helm` that answered `helm version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helm {
    /// The program.
    pub path: PathBuf,
    /// The version it reports (`v3.14.4`).
    pub version: String,
}

impl Helm {
    /// The `helm` to render with: `explicit` (`--helm`), else `AIRLOCK_HELM`, else `helm` on
    /// `PATH`. One that is named but does not run is an error; `None` when none is named and
    /// `PATH` has none that runs.
    pub fn find(explicit: Option<&Path>) -> Result<Option<Helm>, Error> {
        let named = explicit.map(|p| (p.to_owned(), "--helm")).or_else(|| {
            std::env::var_os("AIRLOCK_HELM")
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), "AIRLOCK_HELM"))
        });
        if let Some((path, by)) = named {
            return Helm::probe(&path, by).map(Some);
        }
        let Some(path) = on_path("helm") else {
            return Ok(None);
        };
        match Helm::probe(&path, "PATH") {
            Ok(helm) => Ok(Some(helm)),
            Err(err) => {
                tracing::warn!(%err, "helm on PATH does not run; charts are analysed statically");
                Ok(None)
            }
        }
    }

    fn probe(path: &Path, by: &'static str) -> Result<Helm, Error> {
        let output = Command::new(path)
            .arg("version")
            .output()
            .map_err(|source| Error::Run {
                path: path.to_owned(),
                by,
                source,
            })?;
        if !output.status.success() {
            return Err(Error::Version {
                path: path.to_owned(),
                by,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(Helm {
            path: path.to_owned(),
            version: parse_version(&text),
        })
    }

    /// The arguments of `helm template` for `chart`.
    pub fn template_args(release: &str, chart: &Path, spec: Option<&ChartSpec>) -> Vec<String> {
        let namespace = spec.map_or("default", |s| s.namespace.as_str());
        let mut args = vec![
            "template".to_owned(),
            release.to_owned(),
            chart.display().to_string(),
            "--namespace".to_owned(),
            namespace.to_owned(),
        ];
        if let Some(spec) = spec {
            for file in &spec.values {
                args.push("--values".to_owned());
                args.push(file.display().to_string());
            }
            for (key, value) in &spec.set {
                args.push("--set".to_owned());
                args.push(value.to_set_arg(key));
            }
        }
        args.push("--include-crds".to_owned());
        args
    }

    /// Runs `helm template`; `Err` holds what helm printed on stderr.
    pub fn template(&self, args: &[String], cwd: &Path) -> Result<String, String> {
        let output = Command::new(&self.path)
            .args(args)
            .current_dir(cwd)
            .output()
            .map_err(|err| format!("failed to run {}: {err}", self.path.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr.trim();
            return Err(if message.is_empty() {
                format!("helm template exited with {}", output.status)
            } else {
                message.lines().take(3).collect::<Vec<_>>().join(" ")
            });
        }
        String::from_utf8(output.stdout).map_err(|_| "helm printed text that is not UTF-8".into())
    }
}

/// The version in `helm version` output: `version.BuildInfo{Version:"v3.14.4", ...}` (helm 3
/// and 4), or a bare `v3.14.4`.
fn parse_version(text: &str) -> String {
    if let Some(rest) = text.split("Version:\"").nth(1) {
        if let Some(v) = rest.split('"').next() {
            return v.to_owned();
        }
    }
    text.split_whitespace()
        .find(|w| w.starts_with('v'))
        .unwrap_or("unknown")
        .to_owned()
}

/// The first executable file called `name` in `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Scans `helm template` output for `chart` (shown as `shown`): each `# Source:` document as
/// Kubernetes YAML. References keep the template they came from and the object path
/// (`charts/web/templates/deployment.yaml rendered Deployment/web spec...image`), without a
/// line: lines of rendered output are not lines of the template.
pub(crate) fn scan_rendered(output: &str, shown: &str, archive: bool, c: &mut Collector) {
    for (source, text) in documents(output) {
        let file: Arc<str> = Arc::from(template_path(shown, archive, source));
        let mut scratch = Collector::new(&c.base);
        super::k8s::scan_text(text, file.clone(), &mut scratch);
        for (reference, sources) in scratch.found {
            for s in sources {
                let source = Source {
                    file: s.file,
                    line: None,
                    what: format!("rendered {}", s.what),
                };
                c.reference(reference.clone(), source);
            }
        }
        let rendered: Arc<str> = Arc::from(format!("{file} (rendered)"));
        for mut u in scratch.unresolved {
            u.file = rendered.clone();
            c.unresolved.push(u);
        }
        for mut w in scratch.warnings {
            w.file = rendered.clone();
            c.warnings.push(w);
        }
    }
}

/// `helm template` output split at its `# Source: PATH` lines: (PATH, the YAML after it).
fn documents(output: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut current: Option<(&str, usize)> = None;
    let mut offset = 0;
    for line in output.split_inclusive('\n') {
        if let Some(path) = line.trim_end().strip_prefix("# Source: ") {
            if let Some((source, start)) = current.take() {
                out.push((source, &output[start..offset]));
            }
            current = Some((path.trim(), offset + line.len()));
        }
        offset += line.len();
    }
    if let Some((source, start)) = current {
        out.push((source, &output[start..]));
    }
    out
}

/// A `# Source:` path (`web/charts/cache/templates/x.yaml`, relative to the folder holding
/// the chart) as shown to users: under the chart's folder, or inside its archive.
fn template_path(shown: &str, archive: bool, source: &str) -> String {
    if archive {
        return format!("{shown}!/{source}");
    }
    match source.split_once('/') {
        Some((_, rest)) => format!("{shown}/{rest}"),
        None => format!("{shown}/{source}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_helm_3_4_and_short_output_are_read() {
        assert_eq!(
            parse_version("version.BuildInfo{Version:\"v3.14.4\", GitCommit:\"x\"}\n"),
            "v3.14.4"
        );
        assert_eq!(parse_version("v4.0.1+gabc\n"), "v4.0.1+gabc");
        assert_eq!(parse_version("nonsense"), "unknown");
    }

    #[test]
    fn rendered_output_is_split_at_source_lines_and_shown_under_the_chart() {
        let output = "---\n# Source: web/templates/a.yaml\nimage: a:1\n---\n# Source: web/charts/db/templates/b.yaml\nkind: Pod\n---\nimage: b:1\n";
        let docs = documents(output);
        assert_eq!(
            docs,
            [
                ("web/templates/a.yaml", "image: a:1\n---\n"),
                (
                    "web/charts/db/templates/b.yaml",
                    "kind: Pod\n---\nimage: b:1\n"
                )
            ]
        );
        assert_eq!(
            template_path("charts/web", false, docs[1].0),
            "charts/web/charts/db/templates/b.yaml"
        );
        assert_eq!(
            template_path("web-1.0.tgz", true, docs[0].0),
            "web-1.0.tgz!/web/templates/a.yaml"
        );
        let mut c = Collector::default();
        scan_rendered(output, "charts/web", false, &mut c);
        let found: Vec<String> = c
            .found
            .iter()
            .map(|(r, s)| format!("{r} {}", s[0]))
            .collect();
        assert_eq!(
            found,
            [
                "docker.io/library/a:1 charts/web/templates/a.yaml rendered image",
                "docker.io/library/b:1 charts/web/charts/db/templates/b.yaml rendered image"
            ]
        );
    }
}
