//! The sandbox ("pause") image of a payload's engine: every Kubernetes pod runs it first, so
//! a node without it cannot start a single pod offline. This module finds which image that
//! is, and makes sure the build captures it.
//!
//! - containerd: the spec's `engine: {kind: containerd, sandbox_image: REF}`; without it, the
//!   default of the payload's containerd, read from `<containerd> config default` when the
//!   binary runs on the build host ([`containerd_default_by_running`]), else looked up by
//!   containerd version in [`CONTAINERD_DEFAULTS`].
//! - k3s: `--pause-image REF` among the server arguments, else [`K3S_DEFAULT_PAUSE`]
//!   ([`k3s_pause_image`]).
//!
//! [`ensure_captured`] adds the image to the capture list when no `images:` entry names it,
//! so it is pulled from its registry like every image; a build that cannot capture it fails
//! naming it.

use std::path::Path;
use std::process::Command;

use crate::reference::ImageRef;
use crate::spec::ImageSpec;

/// Default `sandbox_image` by containerd release line, from each line's `config default`
/// (CRI plugin defaults): the fallback when the payload's containerd cannot run on the build
/// host. 1.6 releases before the move to registry.k8s.io named `k8s.gcr.io/pause:3.6`.
pub const CONTAINERD_DEFAULTS: [(&str, &str); 5] = [
    ("1.5", "k8s.gcr.io/pause:3.5"),
    ("1.6", "registry.k8s.io/pause:3.6"),
    ("1.7", "registry.k8s.io/pause:3.8"),
    ("2.0", "registry.k8s.io/pause:3.10"),
    ("2.1", "registry.k8s.io/pause:3.10"),
];

/// k3s's default pause image (its `--pause-image` default).
pub const K3S_DEFAULT_PAUSE: &str = "docker.io/rancher/mirrored-pause:3.6";

/// The sandbox image in the text of `containerd config default`: `sandbox_image = "..."`
/// (config version 2, containerd 1.x) or `sandbox = '...'` (version 3, containerd 2.x).
pub fn parse_config_default(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if !matches!(key.trim(), "sandbox_image" | "sandbox") {
            return None;
        }
        let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// Runs `<containerd> config default` and reads its sandbox image; `None` when the binary
/// does not run here (another architecture) or prints none.
pub fn containerd_default_by_running(containerd: &Path) -> Option<String> {
    let out = Command::new(containerd)
        .args(["config", "default"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_config_default(&String::from_utf8_lossy(&out.stdout))
}

/// The default sandbox image of containerd `version` (`1.6.20`, `v1.7.2`, `1.6.20~ds1`) from
/// [`CONTAINERD_DEFAULTS`]; `None` for a release line not in the table.
pub fn containerd_default_by_version(version: &str) -> Option<&'static str> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '~', '-', '+']);
    let line = format!("{}.{}", parts.next()?, parts.next()?);
    CONTAINERD_DEFAULTS
        .iter()
        .find(|(l, _)| *l == line)
        .map(|(_, image)| *image)
}

/// The pause image k3s runs with `args` (its server arguments): the value of
/// `--pause-image REF` or `--pause-image=REF` (the last one wins), else
/// [`K3S_DEFAULT_PAUSE`].
pub fn k3s_pause_image(args: &[String]) -> String {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--pause-image=") {
            found = Some(v.to_owned());
        } else if a == "--pause-image" {
            found = it.next().cloned();
        }
    }
    found.unwrap_or_else(|| K3S_DEFAULT_PAUSE.to_owned())
}

/// Makes sure `images` captures `sandbox`: when no entry names it, adds one without `from`
/// (pulled from its registry like every such image). Returns whether it was added.
pub fn ensure_captured(images: &mut Vec<ImageSpec>, sandbox: &ImageRef) -> bool {
    if images.iter().any(|i| i.reference == *sandbox) {
        return false;
    }
    images.push(ImageSpec {
        reference: sandbox.clone(),
        from: None,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_image_is_read_from_config_default_of_either_config_version() {
        let v2 = "[plugins.\"io.containerd.grpc.v1.cri\"]\n    restrict_oom_score_adj = false\n    sandbox_image = \"registry.k8s.io/pause:3.6\"\n";
        assert_eq!(
            parse_config_default(v2).as_deref(),
            Some("registry.k8s.io/pause:3.6")
        );
        let v3 = "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n      sandbox = 'registry.k8s.io/pause:3.10'\n";
        assert_eq!(
            parse_config_default(v3).as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
        assert_eq!(parse_config_default("version = 2\n"), None);
    }

    #[test]
    fn the_version_table_knows_debians_containerd_and_not_unknown_lines() {
        assert_eq!(
            containerd_default_by_version("1.6.20~ds1"),
            Some("registry.k8s.io/pause:3.6")
        );
        assert_eq!(
            containerd_default_by_version("v1.7.2"),
            Some("registry.k8s.io/pause:3.8")
        );
        assert_eq!(containerd_default_by_version("0.9.1"), None);
        assert_eq!(containerd_default_by_version("garbage"), None);
    }

    #[test]
    fn this_hosts_containerd_agrees_with_the_table_when_it_runs() {
        let bin = Path::new("/usr/bin/containerd");
        let Some(read) = containerd_default_by_running(bin) else {
            // Not installed here: nothing to compare (the parsing is tested above).
            return;
        };
        let version = Command::new(bin).arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&version.stdout).into_owned();
        // `containerd github.com/containerd/containerd 1.6.20~ds1 <revision>`
        let v = text.split_whitespace().nth(2).unwrap_or_default();
        if let Some(table) = containerd_default_by_version(v) {
            assert_eq!(read, table, "containerd {v}");
        }
    }

    #[test]
    fn k3s_runs_its_pause_image_flag_or_the_rancher_default() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(k3s_pause_image(&args(&[])), K3S_DEFAULT_PAUSE);
        assert_eq!(
            k3s_pause_image(&args(&["--disable=traefik", "--pause-image", "ex.io/p:1"])),
            "ex.io/p:1"
        );
        assert_eq!(
            k3s_pause_image(&args(&[
                "--pause-image=ex.io/p:1",
                "--pause-image=ex.io/p:2"
            ])),
            "ex.io/p:2"
        );
    }

    #[test]
    fn a_sandbox_image_missing_from_images_is_added_once_to_be_pulled() {
        let pause: ImageRef = "registry.k8s.io/pause:3.6".parse().unwrap();
        let mut images = Vec::new();
        assert!(ensure_captured(&mut images, &pause));
        assert!(!ensure_captured(&mut images, &pause));
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].from, None);
    }
}
