//! The read-only installer commands (bare run, `info`, `list`, `verify`), `airlock inspect`,
//! and reproducible builds.

mod util;

use std::fs;
use std::os::unix::fs::MetadataExt;

use airlock_fixtures::{paths, TreeSpec};
use serde_json::Value;
use util::{run_with_arg0, sha256sum, truncated_copy, u64_of, Workdir};

const SPEC: &str = "name: demo\nversion: \"2.5.1-3\"\nfiles:\n  - src: src/\n    dest: /\n";

#[test]
fn bare_run_prints_the_name_and_usage_and_changes_nothing() {
    let w = Workdir::new();
    TreeSpec::small(1).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    w.build("demo.run");
    // Run from a folder holding only the installer, so any file it created would show.
    fs::create_dir(w.join("site")).unwrap();
    fs::rename(w.join("demo.run"), w.join("site/demo.run")).unwrap();
    let before = w.names_in("site");
    let mtime_before = fs::metadata(w.join("site")).unwrap().mtime_nsec();

    let mut cmd = w.installer_command(&w.join("site/demo.run"), &[]);
    cmd.current_dir(w.join("site"));
    let run = run_with_arg0(cmd, "./demo.run").success();

    assert!(
        run.stdout.contains("demo"),
        "name missing:\n{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("2.5.1-3"),
        "version missing:\n{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("Usage: ./demo.run"),
        "usage missing:\n{}",
        run.describe()
    );
    for cmd in ["info", "list", "verify", "extract"] {
        assert!(
            run.stdout.contains(cmd),
            "command {cmd} missing from the usage:\n{}",
            run.describe()
        );
    }
    assert_eq!(w.names_in("site"), before, "a bare run created files");
    assert_eq!(
        fs::metadata(w.join("site")).unwrap().mtime_nsec(),
        mtime_before,
        "a bare run touched the folder"
    );
}

#[test]
fn info_json_reports_what_was_built() {
    let w = Workdir::new();
    let tree = TreeSpec::small(2).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    let installer = w.build("demo.run");

    let info = w
        .run_installer(&installer, &["info", "--json"])
        .success()
        .json();

    assert_eq!(info["name"], "demo", "{info}");
    assert_eq!(info["version"], "2.5.1-3", "{info}");
    assert_eq!(info["platform"], "linux/amd64", "{info}");
    assert_eq!(
        u64_of(&info, "files"),
        (tree.files - tree.hardlinks) as u64,
        "{info}"
    );
    assert_eq!(u64_of(&info, "dirs"), tree.dirs as u64, "{info}");
    assert_eq!(u64_of(&info, "symlinks"), tree.symlinks as u64, "{info}");
    assert_eq!(u64_of(&info, "hardlinks"), tree.hardlinks as u64, "{info}");
    assert_eq!(
        u64_of(&info, "entry_count"),
        (tree.files + tree.dirs + tree.symlinks) as u64,
        "one entry per file, folder, link: {info}"
    );
    assert_eq!(
        u64_of(&info, "file_len"),
        fs::metadata(&installer).unwrap().len(),
        "{info}"
    );
}

#[test]
fn list_json_has_one_object_per_entry_with_the_source_digest() {
    let w = Workdir::new();
    TreeSpec::small(3).write(&w.join("src")).unwrap();
    w.write_file("src/known.txt", "airlock end-to-end\n");
    w.write_spec(SPEC);
    let installer = w.build("demo.run");
    let info = w
        .run_installer(&installer, &["info", "--json"])
        .success()
        .json();

    let list = w
        .run_installer(&installer, &["list", "--json"])
        .success()
        .json();

    let rows = list.as_array().expect("list --json is an array");
    assert_eq!(rows.len() as u64, u64_of(&info, "entry_count"));
    for row in rows {
        for key in ["path", "type", "mode", "size", "digest"] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
    }
    let row = |path: &str| -> &Value {
        rows.iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} not listed in {list}"))
    };
    let known = row("known.txt");
    assert_eq!(known["type"], "file");
    assert_eq!(known["size"], 19);
    assert_eq!(
        known["digest"].as_str().unwrap(),
        sha256sum(&w.join("src/known.txt"))
    );
    // The same for a file of the fixture tree and its kinds of entries.
    assert_eq!(
        row(paths::README)["digest"].as_str().unwrap(),
        sha256sum(&w.join("src").join(paths::README))
    );
    assert_eq!(row(paths::LINK_TO_FILE)["type"], "symlink");
    assert_eq!(row(paths::LINK_TO_FILE)["target"], "../README.txt");
    // Of the hardlink pair, one name is the file and the other a hardlink naming it.
    let (a, b) = (row(paths::HARDLINK_A), row(paths::HARDLINK_B));
    let (file, link) = if a["type"] == "file" { (a, b) } else { (b, a) };
    assert_eq!(
        (&file["type"], &link["type"]),
        (&"file".into(), &"hardlink".into()),
        "{a} {b}"
    );
    assert_eq!(link["target"], file["path"], "{link}");
    assert_eq!(row(paths::PRIVATE_DIR)["type"], "dir");
    let mode = row(paths::EXECUTABLE)["mode"].clone();
    assert!(
        mode == "0755" || mode == 0o755,
        "mode of {} is {mode}",
        paths::EXECUTABLE
    );
}

#[test]
fn verify_of_a_good_installer_succeeds() {
    let w = Workdir::new();
    TreeSpec::small(4).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    let installer = w.build("demo.run");

    w.run_installer(&installer, &["verify"]).success();
    w.run_installer(&installer, &["verify", "--deep"]).success();
}

#[test]
fn inspect_shows_the_same_fields_as_info_json() {
    let w = Workdir::new();
    TreeSpec::small(5).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    let installer = w.build("demo.run");

    let inspect = w.inspect_json(&installer);
    let info = w
        .run_installer(&installer, &["info", "--json"])
        .success()
        .json();

    let fields = inspect.as_object().expect("inspect --json is an object");
    for key in [
        "name",
        "version",
        "platform",
        "created",
        "files",
        "dirs",
        "symlinks",
        "file_len",
        "payload_offset",
    ] {
        assert!(
            fields.contains_key(key),
            "inspect --json lacks {key}: {inspect}"
        );
    }
    for (key, value) in fields {
        assert_eq!(
            info.get(key),
            Some(value),
            "info --json differs from inspect --json on {key}:\n{info}\n{inspect}"
        );
    }
    // The text form names the installer too.
    let text = w
        .airlock(&["inspect", installer.to_str().unwrap()])
        .success();
    assert!(
        text.stdout.contains("demo") && text.stdout.contains("2.5.1-3"),
        "{}",
        text.describe()
    );
}

#[test]
fn inspect_of_a_truncated_installer_exits_3() {
    let w = Workdir::new();
    TreeSpec::small(6).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    let installer = w.build("demo.run");
    let len = fs::metadata(&installer).unwrap().len();
    truncated_copy(&installer, &w.join("cut.run"), len - 1000);

    let run = w.airlock(&["inspect", "cut.run"]).expect_code(3);

    run.stderr_has("truncated");
    assert!(
        util::contains_number(&run.stderr, 1000),
        "missing byte count not named:\n{}",
        run.describe()
    );
}

#[test]
fn builds_of_the_same_spec_are_byte_identical() {
    let w = Workdir::new();
    TreeSpec::small(7).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);

    let a = w.build("a.run");
    let b = w.build("b.run");

    let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert!(
        a == b,
        "two builds differ ({} and {} bytes)",
        a.len(),
        b.len()
    );
}

#[test]
fn source_date_epoch_sets_the_creation_time() {
    let w = Workdir::new();
    TreeSpec::small(8).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    let default = w.build("default.run");
    w.airlock_env(
        &["-q", "build", "-f", "airlock.yaml", "-o", "epoch.run"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    )
    .success();
    let epoch = w.join("epoch.run");

    let info = w
        .run_installer(&epoch, &["info", "--json"])
        .success()
        .json();
    let info_default = w
        .run_installer(&default, &["info", "--json"])
        .success()
        .json();

    assert_eq!(u64_of(&info, "created"), 1_700_000_000, "{info}");
    assert_ne!(
        u64_of(&info_default, "created"),
        1_700_000_000,
        "{info_default}"
    );
    assert!(
        fs::read(&epoch).unwrap() != fs::read(&default).unwrap(),
        "the epoch changed nothing in the file"
    );
    // And the same epoch again gives the same bytes.
    w.airlock_env(
        &["-q", "build", "-f", "airlock.yaml", "-o", "epoch2.run"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    )
    .success();
    assert!(
        fs::read(&epoch).unwrap() == fs::read(w.join("epoch2.run")).unwrap(),
        "epoch builds differ"
    );
    // Extracted files carry it.
    w.run_installer(&epoch, &["-q", "extract", "--target", "out"])
        .success();
    assert_eq!(
        fs::metadata(w.join("out").join(paths::README))
            .unwrap()
            .mtime(),
        1_700_000_000
    );
}
