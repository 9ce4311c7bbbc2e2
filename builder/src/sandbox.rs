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
//! naming it. k3s pulls its pause image itself, so [`check_k3s_pause`] only requires it to
//! be among the images.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::reference::ImageRef;
use crate::spec::ImageSpec;

/// Why the sandbox image of the payload's engine is unknown or not in the payload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload's containerd neither runs here nor names a release line of the table.
    #[error(
        "engine containerd: failed to find the default sandbox image of {binary}: it does not \
         run on this build host and {version}; set it with \
         `engine: {{kind: containerd, sandbox_image: REF}}`",
        binary = binary.display(),
        version = match version {
            Some(v) => format!("its version {v} is not in the table (1.5 to 2.1)"),
            None => "its version cannot be read from the binary".to_owned(),
        }
    )]
    UnknownDefault {
        /// The containerd binary on the build host.
        binary: PathBuf,
        /// The version found in the binary, if any.
        version: Option<String>,
    },
    /// containerd printed a sandbox image that is not an image reference.
    #[error("engine containerd: the default sandbox image {text:?} of {binary} is not an image reference: {reason}")]
    BadDefault {
        /// The containerd binary on the build host.
        binary: PathBuf,
        /// What it printed.
        text: String,
        /// Why it does not parse.
        reason: String,
    },
    /// `--pause-image` in the k3s arguments is not an image reference.
    #[error("engine k3s: --pause-image {text:?} is not an image reference: {reason}")]
    BadK3sPause {
        /// The flag's value.
        text: String,
        /// Why it does not parse.
        reason: String,
    },
    /// k3s's pause image is not among the payload's images.
    #[error(
        "engine k3s: the pause image {image} ({source_of}) is not among the images; \
         k3s needs it for every pod: add `- ref: {image}` to `images:` (with `from:` to take \
         it from a file), or name another with --pause-image in `args`",
        source_of = if *from_flag { "from --pause-image" } else { "k3s's default" }
    )]
    K3sPauseMissing {
        /// The pause image.
        image: ImageRef,
        /// Whether `--pause-image` named it.
        from_flag: bool,
    },
}

/// How long a payload program run on the build host (`containerd config default`,
/// `kubeadm config images list`) may take before it counts as not running here.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

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
    parse_config_default(&run_on_build_host(containerd, &["config", "default"])?)
}

/// Runs a payload program on the build host and returns what it printed on stdout; `None`
/// when it does not run here (another architecture), fails, or runs past [`RUN_TIMEOUT`].
pub fn run_on_build_host(program: &Path, args: &[&str]) -> Option<String> {
    // Output to a file rather than a pipe: waiting with a deadline cannot block on a full
    // pipe, and a program that hangs is killed.
    let mut out = tempfile::tempfile().ok()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().ok()?)
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < RUN_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    if !status.success() {
        return None;
    }
    let mut text = String::new();
    use std::io::{Read, Seek};
    out.rewind().ok()?;
    out.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The containerd version recorded in a Go binary's build information, for binaries built
/// for another architecture: the `-X .../containerd/version.Version=V` of its recorded
/// `-ldflags` (containerd's release builds), else the main module's version when it is not
/// `(devel)`. `None` when neither is there (e.g. Debian's `-trimpath` builds).
pub fn containerd_version_in_binary(bytes: &[u8]) -> Option<String> {
    let version_token = |rest: &[u8]| -> Option<String> {
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || b".~-+".contains(b)))
            .unwrap_or(rest.len());
        let v = std::str::from_utf8(&rest[..end]).ok()?;
        let v = v.trim_start_matches('v');
        v.starts_with(|c: char| c.is_ascii_digit())
            .then(|| v.to_owned())
    };
    for marker in [
        &b"containerd/version.Version="[..],
        b"mod\tgithub.com/containerd/containerd/v2\t",
        b"mod\tgithub.com/containerd/containerd\t",
    ] {
        if let Some(at) = find(bytes, marker) {
            if let Some(v) = version_token(&bytes[at + marker.len()..]) {
                return Some(v);
            }
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The default sandbox image of the containerd binary at `binary` (on the build host):
/// what `config default` prints when it runs here, else the [`CONTAINERD_DEFAULTS`] entry of
/// the version recorded in it. Returns the image and how it was found.
pub fn containerd_default(binary: &Path) -> Result<(ImageRef, String), Error> {
    let (text, how) = match containerd_default_by_running(binary) {
        Some(text) => (text, "read from `containerd config default`".to_owned()),
        None => {
            let version = fs::read(binary)
                .ok()
                .and_then(|b| containerd_version_in_binary(&b));
            match version.as_deref().and_then(containerd_default_by_version) {
                Some(image) => (
                    image.to_owned(),
                    format!(
                        "containerd {}'s default, from the table",
                        version.as_deref().unwrap_or_default()
                    ),
                ),
                None => {
                    return Err(Error::UnknownDefault {
                        binary: binary.to_owned(),
                        version,
                    })
                }
            }
        }
    };
    let image = text
        .parse()
        .map_err(|e: crate::reference::ReferenceError| Error::BadDefault {
            binary: binary.to_owned(),
            text: text.clone(),
            reason: e.to_string(),
        })?;
    Ok((image, how))
}

/// Checks that k3s's pause image (per its server `args`) is among `images`, and returns it.
pub fn check_k3s_pause(args: &[String], images: &[ImageSpec]) -> Result<ImageRef, Error> {
    let text = k3s_pause_image(args);
    let from_flag = args
        .iter()
        .any(|a| a == "--pause-image" || a.starts_with("--pause-image="));
    let image: ImageRef = text
        .parse()
        .map_err(|e: crate::reference::ReferenceError| Error::BadK3sPause {
            text: text.clone(),
            reason: e.to_string(),
        })?;
    if images.iter().any(|i| i.reference == image) {
        Ok(image)
    } else {
        Err(Error::K3sPauseMissing { image, from_flag })
    }
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

    #[test]
    fn the_version_is_read_from_recorded_ldflags_or_the_main_module() {
        let ldflags = b"\x00build\t-ldflags=\"-s -w -X github.com/containerd/containerd/version.Version=v1.7.2 -X x=y\"\n";
        assert_eq!(
            containerd_version_in_binary(ldflags).as_deref(),
            Some("1.7.2")
        );
        let module = b"path\tgithub.com/containerd/containerd/v2/cmd/containerd\nmod\tgithub.com/containerd/containerd/v2\tv2.0.1\th1:x\n";
        assert_eq!(
            containerd_version_in_binary(module).as_deref(),
            Some("2.0.1")
        );
        let devel = b"mod\tgithub.com/containerd/containerd\t(devel)\t\n";
        assert_eq!(containerd_version_in_binary(devel), None);
    }

    #[test]
    fn a_containerd_that_does_not_run_here_falls_back_to_the_table_or_fails_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("containerd");
        // Runs, but fails like a binary of another architecture would; its text records
        // the version the way containerd's release builds do.
        fs::write(
            &bin,
            "#!/bin/sh\nexit 1\n# -X github.com/containerd/containerd/version.Version=v1.7.2\n",
        )
        .unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let (image, how) = containerd_default(&bin).unwrap();
        assert_eq!(image.to_string(), "registry.k8s.io/pause:3.8");
        assert!(how.contains("1.7.2"), "{how}");

        fs::write(&bin, "#!/bin/sh\nexit 1\n").unwrap();
        let err = containerd_default(&bin).unwrap_err().to_string();
        assert!(err.contains(&bin.display().to_string()), "{err}");
        assert!(err.contains("sandbox_image: REF"), "{err}");
    }

    #[test]
    fn a_containerd_that_runs_here_is_asked_for_its_default() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("containerd");
        fs::write(
            &bin,
            "#!/bin/sh\ntest \"$1 $2\" = \"config default\" || exit 2\necho 'version = 2'\necho '    sandbox_image = \"ex.io/pause:9\"'\n",
        )
        .unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let (image, how) = containerd_default(&bin).unwrap();
        assert_eq!(image.to_string(), "ex.io/pause:9");
        assert!(how.contains("config default"), "{how}");
    }

    #[test]
    fn k3s_pause_image_must_be_among_the_images() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let spec = |r: &str| ImageSpec {
            reference: r.parse().unwrap(),
            from: None,
        };
        let images = [spec("rancher/mirrored-pause:3.6"), spec("ex.io/p:1")];
        assert_eq!(
            check_k3s_pause(&[], &images).unwrap().to_string(),
            K3S_DEFAULT_PAUSE
        );
        assert!(check_k3s_pause(&args(&["--pause-image=ex.io/p:1"]), &images).is_ok());
        let err = check_k3s_pause(&args(&["--pause-image", "ex.io/p:2"]), &images)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("engine k3s: the pause image ex.io/p:2 (from --pause-image) is not among the images"),
            "{err}"
        );
        let err = check_k3s_pause(&[], &images[1..]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{K3S_DEFAULT_PAUSE} (k3s's default)")),
            "{err}"
        );
        let err = check_k3s_pause(&args(&["--pause-image=BAD REF"]), &images)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("engine k3s: --pause-image \"BAD REF\""),
            "{err}"
        );
    }
}
