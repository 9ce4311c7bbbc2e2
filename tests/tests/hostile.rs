//! Hostile payloads: installers whose index was written by hand to break a rule of SPEC.md
//! (escaping paths, links out of the target, device nodes, duplicates, sizes and ranges that
//! lie) while every digest in the file is correct. The real stub runs each one: `verify`,
//! `list`, `extract` and `install --root` must refuse it with exit code 3 and a message
//! naming the broken rule, and nothing may be written outside the target (nor inside it).

mod util;

use std::fs;
use std::path::PathBuf;

use airlock_fixtures::hostile::{digest_of, HostilePayload, EMPTY_DIGEST};
use serde_json::json;
use util::{chmod, free_addr, stub_bin, tree, Run, Workdir};

/// A work folder with `outside/secret` (what an escape would hit), an existing install
/// root holding one file, and the real stub's bytes.
struct Arena {
    w: Workdir,
    stub: Vec<u8>,
}

impl Arena {
    fn new() -> Arena {
        let w = Workdir::new();
        w.write_file("outside/secret", "do not touch\n");
        w.write_file("root/etc/hostname", "node-1\n");
        let stub = fs::read(stub_bin()).expect("read the stub");
        Arena { w, stub }
    }

    fn outside(&self) -> PathBuf {
        self.w.join("outside")
    }

    fn write(&self, name: &str, p: &HostilePayload) -> PathBuf {
        let path = self.w.join(format!("{name}.run"));
        fs::write(&path, p.write(&self.stub)).unwrap();
        chmod(&path, 0o755);
        path
    }

    /// Everything outside the target and root, with file contents, for before/after checks.
    fn snapshot(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut all = Vec::new();
        for top in ["outside", "root"] {
            let base = self.w.join(top);
            for rel in tree(&base) {
                let p = base.join(&rel);
                let content = fs::symlink_metadata(&p)
                    .unwrap()
                    .is_file()
                    .then(|| fs::read(&p).unwrap());
                all.push((format!("{top}/{rel}"), content));
            }
        }
        all
    }
}

/// Runs every command that reads the index on `installer` and checks each refuses it with
/// exit code 3 and a message holding `needle`, and that nothing changed on disk.
fn refused_everywhere(a: &Arena, name: &str, p: &HostilePayload, needle: &str) {
    let installer = a.write(name, p);
    let before = a.snapshot();
    let target = a.w.join(format!("target-{name}"));
    let addr = free_addr();
    let runs: Vec<Run> = vec![
        a.w.run_installer(&installer, &["verify"]),
        a.w.run_installer(&installer, &["list"]),
        a.w.run_installer(
            &installer,
            &["extract", "--target", target.to_str().unwrap()],
        ),
        a.w.run_installer(
            &installer,
            &[
                "install",
                "--root",
                a.w.join("root").to_str().unwrap(),
                "--listen",
                &addr,
                "--yes",
            ],
        ),
    ];
    for run in &runs {
        assert_eq!(
            run.code,
            Some(3),
            "{name}: not refused as corrupt:\n{}",
            run.describe()
        );
        for want in ["invalid index", needle] {
            assert!(
                run.stderr.contains(want),
                "{name}: the message does not say {want:?}:\n{}",
                run.describe()
            );
        }
    }
    assert!(
        !target.exists(),
        "{name}: the refused extract left its target: {:?}",
        tree(&target)
    );
    assert_eq!(
        a.snapshot(),
        before,
        "{name}: something changed outside the target"
    );
    fs::remove_file(installer).unwrap();
}

#[test]
fn paths_that_climb_out_or_are_absolute_are_refused() {
    let a = Arena::new();
    let mut p = HostilePayload::new("dotdot");
    p.dir("a");
    p.file_with_content("a/../../outside/secret", b"pwned\n");
    refused_everywhere(&a, "dotdot", &p, "`..` component");

    let mut p = HostilePayload::new("absolute");
    let abs = format!("{}/secret", a.outside().display());
    p.file_with_content(&abs, b"pwned\n");
    refused_everywhere(&a, "absolute", &p, "absolute");
}

#[test]
fn a_file_written_through_an_escaping_symlink_is_refused() {
    let a = Arena::new();
    for (name, link) in [
        ("relative-link", "../outside".to_owned()),
        ("absolute-link", a.outside().display().to_string()),
    ] {
        let mut p = HostilePayload::new(name);
        p.symlink("esc", &link);
        p.file_with_content("esc/secret", b"pwned\n");
        refused_everywhere(&a, name, &p, "lies under a non-folder");
    }
}

#[test]
fn an_escaping_symlink_left_by_an_earlier_extract_is_never_followed() {
    // Two installers, each valid on its own: the first leaves a link out of the target, the
    // second has a folder of the same name with a file in it.
    let a = Arena::new();
    let mut first = HostilePayload::new("first");
    first.symlink("esc", &a.outside().display().to_string());
    let first = a.write("first", &first);
    let mut second = HostilePayload::new("second");
    second.dir("esc");
    second.file_with_content("esc/secret", b"pwned\n");
    let second = a.write("second", &second);

    a.w.run_installer(&first, &["-q", "extract", "--target", "t"])
        .success();
    let before = a.snapshot();
    let run =
        a.w.run_installer(&second, &["extract", "--target", "t"])
            .expect_code(1);
    run.stderr_has("refusing to replace symlink");
    assert_eq!(
        a.snapshot(),
        before,
        "the second extract wrote through the link"
    );
    assert_eq!(
        fs::read(a.outside().join("secret")).unwrap(),
        b"do not touch\n"
    );
    assert_eq!(
        tree(&a.w.join("t")),
        ["esc"],
        "only the first installer's link"
    );
}

#[test]
fn hardlinks_out_of_the_payload_are_refused() {
    let a = Arena::new();
    let outside_abs = format!("{}/secret", a.outside().display());
    for (name, target, needle) in [
        ("hardlink-dotdot", "../outside/secret", "`..` component"),
        ("hardlink-absolute", outside_abs.as_str(), "absolute"),
        // A hardlink to an escaping symlink entry would link the link, not a file.
        ("hardlink-to-link", "esc", "does not name an earlier file"),
        (
            "hardlink-to-missing",
            "nowhere",
            "does not name an earlier file",
        ),
    ] {
        let mut p = HostilePayload::new(name);
        p.symlink("esc", &outside_abs);
        p.hardlink("h", target);
        refused_everywhere(&a, name, &p, needle);
    }
}

#[test]
fn device_nodes_fifos_and_sockets_are_refused() {
    let a = Arena::new();
    for ty in ["chardev", "blockdev", "fifo", "socket", "char", "block"] {
        let mut p = HostilePayload::new(ty);
        p.raw_entry(json!({"path": "dev", "type": ty, "mode": 0o666}));
        refused_everywhere(&a, ty, &p, "unknown type");
    }
    // A device smuggled in as a `file` with device fields is not a file either.
    let mut p = HostilePayload::new("rdev");
    p.raw_entry(
        json!({"path": "null", "type": "file", "mode": 0o666, "size": 0,
        "digest": EMPTY_DIGEST, "rdev": 259}),
    );
    refused_everywhere(&a, "rdev", &p, "unknown field `rdev`");
    // Mode bits beyond permissions (S_IFCHR) are refused too.
    let mut p = HostilePayload::new("ifchr");
    p.raw_entry(
        json!({"path": "null", "type": "file", "mode": 0o20666, "size": 0,
        "digest": EMPTY_DIGEST}),
    );
    refused_everywhere(&a, "ifchr", &p, "beyond permission bits");
}

#[test]
fn duplicate_paths_are_refused() {
    let a = Arena::new();
    let mut p = HostilePayload::new("duplicate");
    let d = p.file_with_content("etc", b"first\n");
    p.file("etc", 6, &d);
    refused_everywhere(&a, "duplicate", &p, "not sorted by path or not unique");

    let mut p = HostilePayload::new("dup-kinds");
    p.dir("etc");
    p.symlink("etc", "/etc");
    refused_everywhere(&a, "dup-kinds", &p, "not sorted by path or not unique");
}

#[test]
fn sizes_and_ranges_that_lie_are_refused() {
    let a = Arena::new();
    let tiny = b"tiny";

    // A file declaring 10 GiB over a 4-byte blob.
    let mut p = HostilePayload::new("ten-gib-file");
    let d = digest_of(tiny);
    let at = p.raw_frame(tiny);
    p.blob(&d, 4, at);
    p.file("big", 10 << 30, &d);
    refused_everywhere(
        &a,
        "ten-gib-file",
        &p,
        "declares 10737418240 bytes but its blob has 4",
    );

    // The blob itself declaring 10 GiB of a 4-byte raw stream.
    let mut p = HostilePayload::new("ten-gib-blob");
    let at = p.raw_frame(tiny);
    p.blob(&d, 10 << 30, at);
    p.file("big", 10 << 30, &d);
    refused_everywhere(&a, "ten-gib-blob", &p, "lies outside the 4-byte raw stream");

    // Two blobs sharing bytes of the raw stream.
    let mut p = HostilePayload::new("overlap");
    let (one, two) = (b"0123456789".as_slice(), b"456789abcd".as_slice());
    let at = p.raw_frame(b"0123456789abcd");
    let (d1, d2) = (digest_of(one), digest_of(two));
    let mut blobs = [(d1.clone(), at), (d2.clone(), at + 4)];
    blobs.sort();
    for (d, off) in &blobs {
        p.blob(d, 10, *off);
    }
    p.file("a", 10, &d1);
    p.file("b", 10, &d2);
    refused_everywhere(&a, "overlap", &p, "two blobs overlap");

    // A blob past the end of the raw stream.
    let mut p = HostilePayload::new("past-the-end");
    p.raw_frame(tiny);
    p.blob(&d, 4, 1 << 40);
    p.file("f", 4, &d);
    refused_everywhere(&a, "past-the-end", &p, "lies outside");

    // A frame claiming more stored bytes than the file holds.
    let mut p = HostilePayload::new("frame-past-the-end");
    let at = p.raw_frame(tiny);
    p.blob(&d, 4, at);
    p.file("f", 4, &d);
    p.frame_json_mut(0)["stored_len"] = json!(1u64 << 40);
    p.frame_json_mut(0)["codec"] = json!("zstd");
    refused_everywhere(&a, "frame-past-the-end", &p, "frame bytes");

    // A frame declaring a decoded size a reader must not allocate.
    let mut p = HostilePayload::new("huge-frame");
    let at = p.zstd_frame(tiny, 10 << 30);
    p.blob(&d, 4, at);
    p.file("f", 4, &d);
    refused_everywhere(&a, "huge-frame", &p, "1..=16 MiB allowed");
}

#[test]
fn a_frame_that_decodes_to_less_than_it_declares_is_caught_before_any_final_path() {
    // Its stored digest holds, so a shallow `verify` passes (SPEC: decoding is trusted to be
    // deterministic); decoding it is what fails: extract, install and `verify --deep`.
    let a = Arena::new();
    let content = b"sixteen bytes!!\n";
    let mut p = HostilePayload::new("short-frame");
    let at = p.zstd_frame(content, 1 << 20);
    let d = digest_of(content);
    p.blob(&d, 16, at);
    p.file("f", 16, &d);
    let installer = a.write("short-frame", &p);
    let before = a.snapshot();

    let deep =
        a.w.run_installer(&installer, &["verify", "--deep"])
            .expect_code(3);
    deep.stderr_has("decodes to 16 bytes, 1048576 recorded");
    let run =
        a.w.run_installer(&installer, &["extract", "--target", "t"])
            .expect_code(3);
    run.stderr_has("decodes to 16 bytes");
    assert!(!a.w.join("t").exists(), "{:?}", tree(&a.w.join("t")));
    let run = a.w.run_installer(
        &installer,
        &[
            "install",
            "--root",
            a.w.join("root").to_str().unwrap(),
            "--listen",
            &free_addr(),
            "--yes",
        ],
    );
    assert_eq!(run.code, Some(3), "{}", run.describe());
    let mut after = a.snapshot();
    after.retain(|(p, _)| !p.starts_with("root/var"));
    let mut before = before;
    before.retain(|(p, _)| !p.starts_with("root/var"));
    assert_eq!(after, before, "a final path changed");
    assert!(!a.w.join("root/f").exists());
}
