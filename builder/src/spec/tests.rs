//! Tests of spec parsing: values, locations of errors, images, engines, hooks.

use super::de::SOURCE_BASE;
use super::*;

/// A spec folder with `rootfs/` and `bin/containerd`.
fn spec_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rootfs/etc")).unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/containerd"), b"elf").unwrap();
    dir
}

fn parse(dir: &tempfile::TempDir, text: &str) -> Result<Spec> {
    Spec::from_str_at(text, &dir.path().join("airlock.yaml"))
}

fn parse_err(dir: &tempfile::TempDir, text: &str) -> String {
    match parse(dir, text) {
        Ok(spec) => panic!("expected an error, got {spec:?}"),
        Err(err) => err.to_string(),
    }
}

const VALID: &str = "\
name: edge
version: \"1.30.4-1\"
platform: linux/arm64/v8
files:
  - src: rootfs/
    dest: /
  - src: bin/containerd
    dest: /usr/local//bin/./containerd
    mode: \"0755\"
";

#[test]
fn valid_spec_parses_into_typed_values() {
    let dir = spec_dir();
    let spec = parse(&dir, VALID).unwrap();
    assert_eq!(spec.name.as_str(), "edge");
    assert_eq!(spec.version.as_str(), "1.30.4-1");
    assert_eq!(spec.platform.to_string(), "linux/arm64/v8");
    assert_eq!(spec.platform.arch(), "arm64");
    assert_eq!(spec.platform.variant(), Some("v8"));
    assert_eq!(spec.base_dir, dir.path());
    assert_eq!(spec.files.len(), 2);
    assert_eq!(spec.files[0].src, dir.path().join("rootfs/"));
    assert!(spec.files[0].dest.is_root());
    assert_eq!(spec.files[0].mode, None);
    assert_eq!(spec.files[1].src, dir.path().join("bin/containerd"));
    assert_eq!(spec.files[1].dest.as_str(), "usr/local/bin/containerd");
    assert_eq!(spec.files[1].dest.to_string(), "/usr/local/bin/containerd");
    assert_eq!(spec.files[1].mode.map(Mode::bits), Some(0o755));
}

#[test]
fn spec_is_read_from_a_file_and_relative_to_its_folder() {
    let dir = spec_dir();
    let path = dir.path().join("airlock.yaml");
    std::fs::write(&path, VALID).unwrap();
    let spec = Spec::from_path(&path).unwrap();
    assert_eq!(spec.path, path);
    assert_eq!(spec.files[1].src, dir.path().join("bin/containerd"));
}

#[test]
fn missing_spec_file_is_a_read_error() {
    let dir = spec_dir();
    let err = Spec::from_path(&dir.path().join("nope.yaml")).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(err.to_string().starts_with("failed to read spec"), "{err}");
}

#[test]
fn platform_defaults_to_the_builders_own() {
    let dir = spec_dir();
    let spec = parse(&dir, "name: edge\nversion: '1'\n").unwrap();
    let expected = if cfg!(target_arch = "aarch64") {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    assert_eq!(spec.platform.to_string(), expected);
    assert!(spec.files.is_empty());
}

#[test]
fn unquoted_numeric_version_keeps_its_text() {
    let dir = spec_dir();
    let spec = parse(&dir, "name: edge\nversion: 1.30\n").unwrap();
    assert_eq!(spec.version.as_str(), "1.30");
}

#[test]
fn unknown_key_is_reported_with_its_location() {
    let dir = spec_dir();
    let text = "\
name: edge
version: '1'
files:
  - src: rootfs
    dest: /
  - dest: /x
    sorce: bin/containerd
";
    let err = parse_err(&dir, text);
    assert!(err.contains("airlock.yaml:7:5: "), "{err}");
    assert!(
        err.contains("unknown field `sorce`, expected one of `src`, `dest`, `mode`"),
        "{err}"
    );
    assert!(!err.contains(" at line "), "{err}");
}

#[test]
fn unknown_top_level_key_is_reported_with_its_location() {
    let dir = spec_dir();
    let err = parse_err(&dir, "name: edge\nversion: '1'\nplatfrom: linux/amd64\n");
    assert!(err.contains("airlock.yaml:3:1: "), "{err}");
    assert!(err.contains("unknown field `platfrom`"), "{err}");
}

#[test]
fn wrong_type_is_reported_with_its_location() {
    let dir = spec_dir();
    let err = parse_err(&dir, "name: edge\nversion: '1'\nfiles: 3\n");
    assert!(err.contains("airlock.yaml:3:8: "), "{err}");
    assert!(err.contains("invalid type: integer `3`"), "{err}");
}

#[test]
fn missing_src_key_is_reported_with_a_location() {
    let dir = spec_dir();
    let err = parse_err(&dir, "name: edge\nversion: '1'\nfiles:\n  - dest: /x\n");
    assert!(err.contains("missing field `src`"), "{err}");
    assert!(err.contains("airlock.yaml:4:"), "{err}");
}

#[test]
fn missing_source_is_reported_at_the_src_value() {
    let dir = spec_dir();
    let text = "\
name: edge
version: '1'
files:
  - src: rootfs
    dest: /
  - src: bin/runc
    dest: /usr/bin/runc
";
    let err = parse_err(&dir, text);
    assert!(err.contains("airlock.yaml:6:10: "), "{err}");
    let missing = dir.path().join("bin/runc");
    assert!(
        err.contains(&format!("source not found: {}", missing.display())),
        "{err}"
    );
}

#[test]
fn absolute_source_is_kept_as_is() {
    let dir = spec_dir();
    let other = spec_dir();
    let src = other.path().join("bin/containerd");
    let text = format!(
        "name: edge\nversion: '1'\nfiles:\n  - src: {}\n    dest: /c\n",
        src.display()
    );
    let spec = parse(&dir, &text).unwrap();
    assert_eq!(spec.files[0].src, src);
}

#[test]
fn dest_with_dotdot_escapes_the_root() {
    let dir = spec_dir();
    for dest in ["/../etc", "../x", "/usr/../../etc"] {
        let text = format!("name: edge\nversion: '1'\nfiles:\n  - src: rootfs\n    dest: {dest}\n");
        let err = parse_err(&dir, &text);
        assert!(err.contains("escapes the root"), "{dest}: {err}");
        assert!(err.contains("airlock.yaml:5:11: "), "{dest}: {err}");
    }
}

#[test]
fn relative_dest_is_rejected() {
    let err = "usr/bin".parse::<DestPath>().unwrap_err();
    assert!(matches!(err, Error::DestNotAbsolute(_)), "{err}");
    assert!("/a\0b".parse::<DestPath>().is_err());
}

#[test]
fn dest_is_normalised() {
    let dest: DestPath = "//usr/./local//bin/".parse().unwrap();
    assert_eq!(dest.as_str(), "usr/local/bin");
    let root: DestPath = "/./".parse().unwrap();
    assert!(root.is_root());
    assert_eq!(root.to_string(), "/");
}

#[test]
fn bad_name_is_rejected_with_its_location() {
    let dir = spec_dir();
    let err = parse_err(&dir, "name: Edge_1\nversion: '1'\n");
    assert!(err.contains("airlock.yaml:1:7: "), "{err}");
    assert!(err.contains("invalid name `Edge_1`"), "{err}");
    for bad in ["", "-edge", "edge.1", "EDGE"] {
        assert!(bad.parse::<Name>().is_err(), "{bad:?}");
    }
    for good in ["edge", "0edge", "edge-1-30"] {
        assert_eq!(good.parse::<Name>().unwrap().as_str(), good);
    }
}

#[test]
fn bad_version_is_rejected() {
    for bad in ["", "1/2", "1 2", "1\t2"] {
        assert!(bad.parse::<Version>().is_err(), "{bad:?}");
    }
    let dir = spec_dir();
    let err = parse_err(&dir, "name: edge\nversion: 'a/b'\n");
    assert!(
        err.contains("airlock.yaml:2:10: version: invalid version `a/b`"),
        "{err}"
    );
}

#[test]
fn a_version_the_installer_would_refuse_is_rejected_with_its_location() {
    // Regression (issue 10, bug 3): `version: "1%2"` built, then `install` refused it.
    let dir = spec_dir();
    for (version, reason) in [
        ("\"1%2\"", "it contains '%'"),
        ("'1\\2'", "it contains '\\'"),
        ("'.1'", "it starts with '.'"),
        ("'1.0-é'", "it contains a character outside printable ASCII"),
    ] {
        let err = parse_err(&dir, &format!("name: edge\nversion: {version}\n"));
        assert!(
            err.starts_with(&format!(
                "{}:2:10: version: invalid version `",
                dir.path().join("airlock.yaml").display()
            )),
            "{version}: {err}"
        );
        assert!(err.ends_with(reason), "{version}: {err}");
    }
    let long = "a".repeat(129);
    let err = parse_err(&dir, &format!("name: {long}\nversion: '1'\n"));
    assert!(
        err.contains("airlock.yaml:1:7: name: invalid name"),
        "{err}"
    );
    assert!(err.ends_with("it is longer than 128 bytes"), "{err}");
}

#[test]
fn unsupported_platform_is_rejected() {
    for bad in [
        "linux",
        "windows/amd64",
        "linux/riscv64",
        "linux/amd64/v3/x",
        "linux/arm64/",
    ] {
        assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
    }
    let platform: Platform = "linux/amd64".parse().unwrap();
    assert_eq!(platform.os(), "linux");
    assert_eq!(platform.variant(), None);
}

#[test]
fn mode_accepts_octal_strings_and_small_numbers() {
    let dir = spec_dir();
    for (written, bits) in [
        ("\"0755\"", 0o755),
        ("0755", 0o755),
        ("'644'", 0o644),
        ("\"4755\"", 0o4755),
        ("0o750", 0o750),
        ("493", 0o755),
    ] {
        let text = format!(
                "name: edge\nversion: '1'\nfiles:\n  - src: bin/containerd\n    dest: /c\n    mode: {written}\n"
            );
        let spec = parse(&dir, &text).unwrap();
        assert_eq!(spec.files[0].mode.unwrap().bits(), bits, "{written}");
    }
}

#[test]
fn invalid_or_ambiguous_mode_is_rejected_with_its_location() {
    let dir = spec_dir();
    for (written, expected) in [
        ("\"0999\"", "invalid mode `0999`"),
        ("\"17777\"", "invalid mode `17777`"),
        ("\"\"", "invalid mode ``"),
        ("755", "ambiguous mode 755"),
        ("-1", "invalid mode `-1`"),
    ] {
        let text = format!(
                "name: edge\nversion: '1'\nfiles:\n  - src: bin/containerd\n    dest: /c\n    mode: {written}\n"
            );
        let err = parse_err(&dir, &text);
        assert!(err.contains("airlock.yaml:6:11: "), "{written}: {err}");
        assert!(err.contains(expected), "{written}: {err}");
    }
}

#[test]
fn mode_displays_as_four_octal_digits() {
    assert_eq!(Mode::try_from(0o755).unwrap().to_string(), "0755");
    assert!(Mode::try_from(0o10000).is_err());
}

#[test]
fn images_parse_references_and_sources() {
    let dir = spec_dir();
    std::fs::create_dir_all(dir.path().join("images/app")).unwrap();
    std::fs::write(dir.path().join("images/etcd.tar"), b"").unwrap();
    let hex = "ab".repeat(32);
    let text = format!(
        "\
name: edge
version: '1'
images:
  - ref: busybox
  - ref: example.hub/team/app:1.0
    from: oci:images/app:1.0
  - ref: quay.io/coreos/etcd:v3.5.0
    from: docker-archive:images/etcd.tar:quay.io/coreos/etcd:v3.5.0
  - ref: registry.local:5000/a/b:1
    from: docker://127.0.0.1:5001/a/b:1
  - ref: docker.io/library/alpine@sha256:{hex}
  - ref: x/y
    from: oci:images/app
"
    );
    let spec = parse(&dir, &text).unwrap();
    let refs: Vec<String> = spec
        .images
        .iter()
        .map(|i| i.reference.to_string())
        .collect();
    assert_eq!(
        refs,
        [
            "docker.io/library/busybox:latest".to_owned(),
            "example.hub/team/app:1.0".to_owned(),
            "quay.io/coreos/etcd:v3.5.0".to_owned(),
            "registry.local:5000/a/b:1".to_owned(),
            format!("docker.io/library/alpine@sha256:{hex}"),
            "docker.io/x/y:latest".to_owned(),
        ]
    );
    assert_eq!(spec.images[0].from, None);
    assert_eq!(
        spec.images[1].from,
        Some(ImageSource::OciLayout {
            dir: dir.path().join("images/app"),
            tag: Some("1.0".into())
        })
    );
    assert_eq!(
        spec.images[2].from,
        Some(ImageSource::DockerArchive {
            file: dir.path().join("images/etcd.tar"),
            reference: Some("quay.io/coreos/etcd:v3.5.0".parse().unwrap())
        })
    );
    assert_eq!(
        spec.images[3].from,
        Some(ImageSource::Registry(
            "127.0.0.1:5001/a/b:1".parse().unwrap()
        ))
    );
    assert_eq!(spec.images[4].reference.tag(), None);
    assert!(spec.images[4].reference.digest().is_some());
    assert_eq!(
        spec.images[5].from,
        Some(ImageSource::OciLayout {
            dir: dir.path().join("images/app"),
            tag: None
        })
    );
}

#[test]
fn an_unknown_image_transport_is_reported_with_its_location() {
    let dir = spec_dir();
    let text = "\
name: edge
version: '1'
images:
  - ref: busybox
  - ref: app:1
    from: containers-storage:app:1
";
    let err = parse_err(&dir, text);
    assert!(err.contains("airlock.yaml:6:11: "), "{err}");
    assert!(
        err.contains("unknown image transport in `containers-storage:app:1`"),
        "{err}"
    );
}

#[test]
fn bad_image_entries_are_reported_with_their_location() {
    let dir = spec_dir();
    for (entry, at, expected) in [
        (
            "- ref: Busybox",
            "4:10",
            "invalid image reference `Busybox`",
        ),
        (
            "- ref: a\n    from: oci:missing",
            "5:11",
            "source not found",
        ),
        (
            "- ref: a\n    from: docker://",
            "5:11",
            "invalid image source `docker://`",
        ),
        (
            "- ref: a\n    from: oci:rootfs:-bad",
            "5:11",
            "`-bad` is not a valid tag",
        ),
        (
            "- ref: a\n    form: oci:rootfs",
            "5:5",
            "unknown field `form`",
        ),
        ("- from: oci:rootfs", "4:5", "missing field `ref`"),
    ] {
        let text = format!("name: edge\nversion: '1'\nimages:\n  {entry}\n");
        let err = parse_err(&dir, &text);
        assert!(
            err.contains(&format!("airlock.yaml:{at}: ")),
            "{entry}: {err}"
        );
        assert!(err.contains(expected), "{entry}: {err}");
    }
}

#[test]
fn a_capture_without_ref_takes_every_captured_image_after_named_ones() {
    use crate::capture::lock::{Lock, LockEntry};
    let dir = spec_dir();
    let cap = dir.path().join("cap");
    std::fs::create_dir(&cap).unwrap();
    let mut lock = Lock::default();
    for (r, b) in [("example.hub/team/app:1", 1), ("busybox:1.36", 2)] {
        lock.record(LockEntry {
            reference: r.parse().unwrap(),
            digest: airlock_payload::Sha256Digest([b; 32]),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        });
    }
    lock.save(&cap).unwrap();
    let text = "\
name: edge
version: '1'
images:
  - from: capture:cap
  - ref: busybox:1.36
    from: oci:rootfs
  - ref: example.hub/team/app:1
    from: capture:cap
";
    let spec = parse(&dir, text).unwrap();
    let got: Vec<(String, ImageSource)> = spec
        .images
        .iter()
        .map(|i| (i.reference.to_string(), i.from.clone().unwrap()))
        .collect();
    let capture = ImageSource::Capture { dir: cap.clone() };
    assert_eq!(
        got,
        [
            (
                "docker.io/library/busybox:1.36".to_owned(),
                ImageSource::OciLayout {
                    dir: dir.path().join("rootfs"),
                    tag: None
                }
            ),
            ("example.hub/team/app:1".to_owned(), capture.clone()),
        ]
    );

    std::fs::create_dir(dir.path().join("empty")).unwrap();
    for (from, at, expected) in [
        ("capture:missing", "4:11", "source not found"),
        ("capture:empty", "4:11", "is not a capture"),
    ] {
        let err = parse_err(
            &dir,
            &format!("name: edge\nversion: '1'\nimages:\n  - from: {from}\n"),
        );
        assert!(err.contains(&format!("airlock.yaml:{at}: ")), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn engines_are_a_name_or_a_map_with_kind() {
    let dir = spec_dir();
    let head = "name: edge\nversion: '1'\n";
    let engine = |text: &str| parse(&dir, &format!("{head}{text}\n")).map(|s| s.engine);
    assert_eq!(engine("engine: none").unwrap(), EngineSpec::None);
    assert_eq!(
        engine("engine: containerd").unwrap(),
        EngineSpec::Containerd(ContainerdSpec::default())
    );
    assert_eq!(
        engine("engine: {kind: containerd, namespace: default, pull: false, bin_dir: /opt/bin}")
            .unwrap(),
        EngineSpec::Containerd(ContainerdSpec {
            namespace: "default".into(),
            pull: false,
            bin_dir: Some("/opt/bin".parse().unwrap()),
            sandbox_image: None,
        })
    );
    assert_eq!(
        engine("engine:\n  kind: k3s\n  args: [--disable=traefik]\n  ready_timeout: 60").unwrap(),
        EngineSpec::K3s(K3sSpec {
            args: vec!["--disable=traefik".into()],
            ready_timeout: 60,
            ..K3sSpec::default()
        })
    );
    let err = parse_err(&dir, &format!("{head}engine: k8s\n"));
    assert!(
        err.contains("airlock.yaml:3:9: engine: unknown variant `k8s`"),
        "{err}"
    );
    let err = parse_err(
        &dir,
        &format!("{head}engine:\n  kind: k3s\n  binry: /k3s\n"),
    );
    // Tagged by `kind`, the map is read as a whole: the error points at its start.
    assert!(
        err.contains("airlock.yaml:4:3") && err.contains("unknown field `binry`"),
        "{err}"
    );
}

#[test]
fn hooks_name_existing_scripts() {
    let dir = spec_dir();
    std::fs::write(dir.path().join("pre.sh"), "#!/bin/sh\n").unwrap();
    let head = "name: edge\nversion: '1'\n";
    let spec = parse(&dir, &format!("{head}hooks:\n  pre-install: pre.sh\n")).unwrap();
    assert_eq!(
        spec.hooks
            .pre_install
            .as_ref()
            .map(|p| p.as_path().to_owned()),
        Some(dir.path().join("pre.sh"))
    );
    assert!(spec.hooks.post_install.is_none());
    let err = parse_err(&dir, &format!("{head}hooks:\n  post-install: missing.sh\n"));
    assert!(
        err.contains("airlock.yaml:4:17") && err.contains("missing.sh"),
        "{err}"
    );
    let err = parse_err(&dir, &format!("{head}hooks:\n  during-install: pre.sh\n"));
    assert!(err.contains("unknown field `during-install`"), "{err}");
}

#[test]
fn empty_unsupported_keys_are_accepted() {
    let dir = spec_dir();
    let text = "name: edge\nversion: '1'\nimages: []\ndiscover:\nhooks: {}\nengine: none\n";
    assert!(parse(&dir, text).is_ok());
}

#[test]
fn discover_paths_and_exclude_patterns_parse() {
    let dir = spec_dir();
    let text = "name: edge\nversion: '1'\ndiscover: [rootfs/, bin/containerd]\nexclude:\n  - busybox\n  - 'docker.io/library/*'\n";
    let spec = parse(&dir, text).unwrap();
    assert_eq!(
        spec.discover,
        [
            dir.path().join("rootfs/"),
            dir.path().join("bin/containerd")
        ]
    );
    let exclude: Vec<String> = spec.exclude.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        exclude,
        ["docker.io/library/busybox:latest", "docker.io/library/*"]
    );
    let none = parse(&dir, "name: edge\nversion: '1'\ndiscover:\nexclude: []\n").unwrap();
    assert!(none.discover.is_empty() && none.exclude.is_empty());
}

#[test]
fn bad_discover_or_exclude_entries_are_reported_with_their_location() {
    let dir = spec_dir();
    for (entry, at, expected) in [
        ("discover: [rootfs, manifests/]", "3:20", "source not found"),
        ("discover: manifests", "3:11", "invalid type"),
        (
            "exclude: ['Busy Box']",
            "3:11",
            "invalid image reference `Busy Box`",
        ),
        (
            "exclude: ['a b*']",
            "3:11",
            "invalid exclude pattern `a b*`",
        ),
    ] {
        let err = parse_err(&dir, &format!("name: edge\nversion: '1'\n{entry}\n"));
        assert!(
            err.contains(&format!("airlock.yaml:{at}: ")),
            "{entry}: {err}"
        );
        assert!(err.contains(expected), "{entry}: {err}");
    }
}

#[test]
fn yaml_syntax_error_has_a_location() {
    let dir = spec_dir();
    let err = parse_err(&dir, "name: edge\nversion: [\n");
    assert!(err.contains("airlock.yaml:"), "{err}");
    assert!(matches!(
        parse(&dir, "name: [").unwrap_err(),
        Error::Invalid { .. }
    ));
}

#[test]
fn source_path_needs_a_spec_folder_in_scope() {
    let result: std::result::Result<SourcePath, _> = serde_yaml_ng::from_str("rootfs");
    let err = result.unwrap_err().to_string();
    assert!(err.contains("no spec folder in scope"), "{err}");
}

#[test]
fn source_folder_is_cleared_after_parsing() {
    let dir = spec_dir();
    parse(&dir, VALID).unwrap();
    assert!(SOURCE_BASE.with(|base| base.borrow().is_none()));
}
