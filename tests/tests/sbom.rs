//! The SBOM every build embeds, end to end: `./x.run sbom` and `airlock inspect --sbom` print
//! the same SPDX 2.3 document, the SPDX tools' validator (`pyspdxtools -i`, PyPI `spdx-tools`)
//! accepts it, it names every file and image digest of the spec, two builds of the same
//! inputs give the same bytes, and the signature covers it.

mod util;

use std::fs;
use std::process::Command;

use airlock_fixtures::images::{write_oci_layout, BuiltImage, ImageContent};
use airlock_fixtures::seeded_bytes;
use serde_json::Value;
use util::{flip_byte, have_command, prerequisite, run, u64_of, Workdir};

const SPEC: &str = "\
name: demo
version: \"1.0\"
files:
  - src: src/
    dest: /
images:
  - ref: example.hub/team/app:1.0
    from: oci:images/layout:1.0
  - ref: registry.local:5000/multi/app:2
    from: oci:images/layout:multi
hooks:
  pre-install: scripts/pre.sh
";

/// A work folder with files (one empty, one hard-linked, one symlink), a hook and two
/// images (one multi-arch) from an OCI layout.
fn workdir() -> (Workdir, Vec<BuiltImage>) {
    let w = Workdir::new();
    w.write_file("src/data/one.bin", seeded_bytes(1, 200_000));
    w.write_file("src/etc/motd", "hello\n");
    w.write_file("src/etc/empty", "");
    w.write_file("scripts/pre.sh", "#!/bin/sh\necho pre\n");
    fs::hard_link(w.join("src/data/one.bin"), w.join("src/data/again.bin")).unwrap();
    std::os::unix::fs::symlink("motd", w.join("src/etc/motd.link")).unwrap();
    let built = write_oci_layout(
        &w.join("images/layout"),
        &[
            ("1.0", ImageContent::new("sbom app"), false),
            ("multi", ImageContent::new("sbom multi"), true),
        ],
    )
    .expect("write the OCI layout");
    w.write_spec(SPEC);
    (w, built)
}

fn build(w: &Workdir, extra: &[&str]) -> std::path::PathBuf {
    let mut args = vec!["-q", "build", "-f", "airlock.yaml", "-o", "edge.run"];
    args.extend_from_slice(extra);
    w.airlock_env(&args, &[("SOURCE_DATE_EPOCH", "1700000000")])
        .success();
    w.join("edge.run")
}

fn sbom_of(w: &Workdir, installer: &std::path::Path) -> Vec<u8> {
    w.run_installer(installer, &["-q", "sbom", "-o", "sbom.spdx.json"])
        .success();
    fs::read(w.join("sbom.spdx.json")).unwrap()
}

#[test]
fn sbom_validates_with_the_spdx_tools() {
    let (w, _) = workdir();
    let edge = build(&w, &[]);
    let doc = sbom_of(&w, &edge);
    assert!(!doc.is_empty());
    if !prerequisite(
        have_command("pyspdxtools"),
        "pyspdxtools",
        "pyspdxtools (pip install spdx-tools) is not installed",
    ) {
        return;
    }
    let mut cmd = Command::new("pyspdxtools");
    cmd.arg("-i").arg(w.join("sbom.spdx.json"));
    let check = run(cmd);
    assert_eq!(
        check.code,
        Some(0),
        "pyspdxtools rejected the sbom:\n{}",
        check.describe()
    );
    // The validator does check: a document without its mandatory SHA-1 fails.
    let mut broken: Value = serde_json::from_slice(&doc).unwrap();
    for f in broken["files"].as_array_mut().unwrap() {
        f["checksums"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["algorithm"] != "SHA1");
    }
    w.write_file("broken.spdx.json", serde_json::to_vec(&broken).unwrap());
    let mut cmd = Command::new("pyspdxtools");
    cmd.arg("-i").arg(w.join("broken.spdx.json"));
    assert_ne!(run(cmd).code, Some(0), "a file without SHA-1 passed");
}

#[test]
fn sbom_lists_every_file_and_image_digest() {
    let (w, built) = workdir();
    let edge = build(&w, &[]);
    let doc: Value = serde_json::from_slice(&sbom_of(&w, &edge)).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let files = doc["files"].as_array().unwrap();
    let sha256_of = |f: &Value| -> String {
        f["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["algorithm"] == "SHA256")
            .map(|c| c["checksumValue"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let file = |name: &str| {
        files
            .iter()
            .find(|f| f["fileName"] == name)
            .unwrap_or_else(|| panic!("{name} not in the sbom files: {files:#?}"))
    };
    // Every file the installer lists, with its digest; links and folders are not files.
    let list = w.run_installer(&edge, &["list", "--json"]).success().json();
    let mut listed = 0;
    for e in list.as_array().unwrap() {
        if e["type"] == "file" {
            let f = file(&format!("./{}", e["path"].as_str().unwrap()));
            let digest = e["digest"].as_str().unwrap();
            assert_eq!(format!("sha256:{}", sha256_of(f)), digest);
            assert!(f["comment"].as_str().unwrap().starts_with("mode 0"));
            listed += 1;
        }
    }
    assert_eq!(listed, 3, "motd, empty and one of the hard-linked pair");
    let hardlinked = [file("./data/again.bin"), file("./data/one.bin")];
    assert_eq!(sha256_of(hardlinked[0]), sha256_of(hardlinked[1]));
    assert!(files.iter().all(|f| f["fileName"] != "./etc/motd.link"));
    let hook = file("./scripts/pre.sh");
    assert!(hook["comment"].as_str().unwrap().contains("pre-install"));
    assert_eq!(
        files.len(),
        5,
        "4 tree files (a hard link counts) + the hook"
    );

    let packages = doc["packages"].as_array().unwrap();
    let package_with = |hex: &str| {
        packages
            .iter()
            .find(|p| {
                p["checksums"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["checksumValue"] == hex))
            })
            .unwrap_or_else(|| panic!("no package has digest {hex}"))
    };
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let (app, multi) = (&built[0], &built[1]);
    let app_pkg = package_with(&hex(&app.manifest.digest));
    assert_eq!(app_pkg["name"], "example.hub/team/app");
    assert_eq!(app_pkg["versionInfo"], "1.0");
    assert_eq!(
        app_pkg["externalRefs"][0]["referenceLocator"],
        format!(
            "pkg:oci/app@sha256%3A{}?repository_url=example.hub/team/app&tag=1.0",
            hex(&app.manifest.digest)
        )
    );
    assert_eq!(app_pkg["externalRefs"][0]["referenceType"], "purl");
    let multi_index = multi.index.as_ref().expect("multi-arch image has an index");
    let multi_pkg = package_with(&hex(&multi_index.digest));
    assert_eq!(multi_pkg["name"], "registry.local:5000/multi/app");
    // Every manifest, config and layer the build kept (the linux/amd64 platform).
    for image in [app, multi] {
        for d in std::iter::once(&image.manifest)
            .chain(std::iter::once(&image.config))
            .chain(&image.layers)
        {
            let p = package_with(&hex(&d.digest));
            assert_eq!(p["filesAnalyzed"], false);
        }
    }
    assert!(
        package_with(&hex(&app.config.digest))["comment"]
            .as_str()
            .unwrap()
            .starts_with("image config"),
        "configs are told apart from layers"
    );
    // The document describes the installer, which contains files and images.
    let rels = doc["relationships"].as_array().unwrap();
    let has = |a: &Value, kind: &str, b: &Value| {
        rels.iter().any(|r| {
            r["spdxElementId"] == *a
                && r["relationshipType"] == kind
                && r["relatedSpdxElement"] == *b
        })
    };
    let root = &packages[0];
    assert_eq!(root["name"], "demo");
    assert!(has(&doc["SPDXID"], "DESCRIBES", &root["SPDXID"]));
    assert!(has(&root["SPDXID"], "CONTAINS", &app_pkg["SPDXID"]));
    assert!(has(&root["SPDXID"], "CONTAINS", &hook["SPDXID"]));
    let config_pkg = package_with(&hex(&app.config.digest));
    assert!(has(&app_pkg["SPDXID"], "CONTAINS", &config_pkg["SPDXID"]));
}

#[test]
fn sbom_is_byte_identical_across_two_builds_and_inspect_prints_it() {
    let (a, _) = workdir();
    let (b, _) = workdir();
    let first = sbom_of(&a, &build(&a, &[]));
    let second = sbom_of(&b, &build(&b, &["--no-cache"]));
    assert!(first == second, "the sboms of two builds differ");
    let inspected = a
        .airlock(&["inspect", "--sbom", "edge.run"])
        .success()
        .stdout;
    assert_eq!(inspected.as_bytes(), &first[..]);
    a.airlock(&["inspect", "--sbom", "edge.run", "-o", "again.json"])
        .success();
    assert!(fs::read(a.join("again.json")).unwrap() == first);
    // The namespace is derived from the content: another file, another namespace.
    a.write_file("src/etc/motd", "changed\n");
    let changed: Value = serde_json::from_slice(&sbom_of(&a, &build(&a, &[]))).unwrap();
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_ne!(changed["documentNamespace"], first["documentNamespace"]);
    assert!(first["documentNamespace"]
        .as_str()
        .unwrap()
        .starts_with("https://airlock.invalid/spdx/demo/1.0/"));
}

#[test]
fn the_signature_covers_the_sbom() {
    let (w, _) = workdir();
    w.airlock(&["keygen", "--no-password", "-o", "k"]).success();
    let edge = build(&w, &["--sign", "k.key"]);
    w.run_installer(&edge, &["-q", "verify", "--key", "k.pub"])
        .success();
    let doc = sbom_of(&w, &edge);
    assert!(!doc.is_empty());
    // The sbom is the last content of the raw stream: its end is in the last frame.
    let info = w.inspect_json(&edge);
    let last_frame_byte = u64_of(&info, "payload_offset") + 64 + u64_of(&info, "stored_size") - 1;
    let copy = w.join("flipped.run");
    fs::copy(&edge, &copy).unwrap();
    flip_byte(&copy, last_frame_byte);
    let verify = w.run_stub_on(&copy, &["-q", "verify", "--key", "k.pub"]);
    assert_eq!(verify.code, Some(3), "{}", verify.describe());
    let sbom = w.run_stub_on(&copy, &["-q", "sbom"]);
    assert_eq!(sbom.code, Some(3), "{}", sbom.describe());
}

#[test]
fn an_installer_without_an_sbom_says_so() {
    // As an airlock before the SBOM wrote it: the real stub, a payload with no `sbom`.
    let w = Workdir::new();
    let old = w.join("old.run");
    write_without_sbom(&old);
    w.run_installer(&old, &["-q", "verify"]).success();
    let run = w.run_installer(&old, &["sbom"]).expect_code(1);
    run.stderr_has("no SBOM");
    w.airlock(&["inspect", "--sbom", "old.run"])
        .expect_code(1)
        .stderr_has("no SBOM");
}

fn write_without_sbom(path: &std::path::Path) {
    use airlock_payload::*;
    let stub = fs::read(util::stub_bin()).unwrap();
    let content = b"hello\n".to_vec();
    let digest = Sha256Digest::of(&content);
    let entries = vec![Entry {
        path: "motd".to_owned().try_into().unwrap(),
        mode: 0o644,
        kind: EntryKind::File { size: 6, digest },
    }];
    let blobs = vec![BlobInput {
        digest,
        size: 6,
        precompressed: false,
        name: "motd".into(),
        source: Box::new(content),
    }];
    let info = BuildInfo {
        name: "old".into(),
        version: "1".into(),
        platform: "linux/amd64".into(),
        created: 0,
        mtime: 0,
        builder: "airlock 0.0.0".into(),
    };
    let mut file = std::io::Cursor::new(Vec::new());
    write_installer(
        &mut file,
        &stub,
        &info,
        PayloadContents {
            blobs,
            entries,
            ..Default::default()
        },
        WriteOptions::default(),
        &|_| {},
    )
    .unwrap();
    fs::write(path, file.into_inner()).unwrap();
    util::chmod(path, 0o755);
}
