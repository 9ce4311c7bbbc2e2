//! `airlock build` refuses bad input with exit code 1, a message that points at the problem,
//! and no output (not even a temporary file).

mod util;

use std::fs;

use util::{chmod, is_root, names_in, Run, Workdir};

const GOOD_SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";

fn workdir_with_source() -> Workdir {
    let w = Workdir::new();
    w.write_file("src/etc/app.conf", "key = value\n");
    w
}

/// Builds `yaml` and checks the failure: exit 1, `airlock.yaml:LINE:COL` in stderr, no output.
#[track_caller]
fn build_fails_at(yaml: &str, line: usize, column: usize, words: &str) -> Run {
    let w = workdir_with_source();
    w.write_spec(yaml);
    let before = w.names_in(".");
    let run = w
        .airlock(&["build", "-f", "airlock.yaml", "-o", "demo.run"])
        .expect_code(1);
    run.stderr_has(&format!("airlock.yaml:{line}:{column}:"));
    run.stderr_has(words);
    assert_eq!(w.names_in("."), before, "a failed build left files behind");
    run
}

#[test]
fn unknown_top_level_key_is_rejected_with_its_location() {
    build_fails_at("name: demo\nversion: \"1.0\"\nfilez: []\n", 3, 1, "filez");
}

#[test]
fn unknown_key_in_a_files_item_is_rejected_with_its_location() {
    build_fails_at(
        "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n    sorce: x\n",
        6,
        5,
        "sorce",
    );
}

#[test]
fn value_of_the_wrong_type_is_rejected_with_its_location() {
    build_fails_at(
        "name: demo\nversion: [1, 2]\nfiles:\n  - src: src/\n    dest: /\n",
        2,
        10,
        "version",
    );
}

#[test]
fn files_item_without_src_is_rejected_with_its_location() {
    build_fails_at(
        "name: demo\nversion: \"1.0\"\nfiles:\n  - dest: /\n",
        4,
        5,
        "src",
    );
}

#[test]
fn src_that_does_not_exist_is_rejected_with_its_location() {
    build_fails_at(
        "name: demo\nversion: \"1.0\"\nfiles:\n  - src: nope/\n    dest: /\n",
        4,
        10,
        "nope",
    );
}

#[test]
fn dest_that_escapes_the_root_is_rejected_with_its_location() {
    build_fails_at(
        "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /../etc\n",
        5,
        11,
        "/../etc",
    );
}

/// Regression (issue 10, bug 3): `version: "1%2"` built an installer whose `install` then
/// refused it ("invalid version"); the builder applies the installer's rule.
#[test]
fn version_the_installer_would_refuse_is_rejected_with_its_location() {
    build_fails_at(
        "name: demo\nversion: \"1%2\"\nfiles:\n  - src: src/\n    dest: /\n",
        2,
        10,
        "invalid version `1%2`: it contains '%'",
    );
}

/// Checks that a build into `output` fails with exit 1, names the place, and leaves no
/// `.airlock-build-*` temporary file in `dir` (nor in the work folder).
#[track_caller]
fn build_into_fails(w: &Workdir, output: &str, dir: &std::path::Path) -> Run {
    let run = w
        .airlock(&["build", "-f", "airlock.yaml", "-o", output])
        .expect_code(1);
    assert!(run.stderr.starts_with("error: "), "{}", run.describe());
    let leftovers: Vec<String> = names_in(dir)
        .into_iter()
        .filter(|n| n.starts_with(".airlock-build-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left in {}: {leftovers:?}",
        dir.display()
    );
    let leftovers: Vec<String> = w
        .names_in(".")
        .into_iter()
        .filter(|n| n.starts_with(".airlock-build-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left in the work folder: {leftovers:?}"
    );
    run
}

#[test]
fn output_in_a_missing_folder_fails_clearly() {
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    let run = build_into_fails(&w, "/nonexistent-dir/x.run", std::path::Path::new("/"));
    run.stderr_has("/nonexistent-dir");
    assert!(!std::path::Path::new("/nonexistent-dir").exists());
}

#[test]
fn output_below_a_file_fails_clearly() {
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    w.write_file("somefile", "not a folder");
    let run = build_into_fails(&w, "somefile/x.run", w.path());
    run.stderr_has("somefile");
    assert_eq!(
        fs::read_to_string(w.join("somefile")).unwrap(),
        "not a folder"
    );
}

#[test]
fn output_that_is_an_existing_folder_fails_and_leaves_no_temporary_file() {
    // The temporary file is written completely before the rename fails: it must go.
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    fs::create_dir(w.join("outdir")).unwrap();
    let run = build_into_fails(&w, "outdir", w.path());
    run.stderr_has("outdir");
    assert!(w.names_in("outdir").is_empty());
}

#[test]
fn output_in_a_read_only_folder_fails_clearly() {
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    if is_root() {
        // Root writes through mode 0555; procfs refuses new files even to root.
        let run = build_into_fails(&w, "/proc/x.run", std::path::Path::new("/proc"));
        run.stderr_has("/proc");
    } else {
        let ro = w.join("ro");
        fs::create_dir(&ro).unwrap();
        chmod(&ro, 0o555);
        let run = build_into_fails(&w, "ro/x.run", &ro);
        chmod(&ro, 0o755);
        run.stderr_has("ro");
        assert!(names_in(&ro).is_empty());
    }
}

#[test]
fn dynamically_linked_stub_is_refused() {
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    let run = w
        .airlock(&[
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "demo.run",
            "--stub",
            "/bin/ls",
        ])
        .expect_code(1);
    run.stderr_has("dynamically linked");
    assert!(!w.join("demo.run").exists());
}

#[test]
fn stub_that_is_not_an_elf_is_refused() {
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    w.write_file("stub.sh", "#!/bin/sh\necho not a stub\n");
    let run = w
        .airlock(&[
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "demo.run",
            "--stub",
            "stub.sh",
        ])
        .expect_code(1);
    run.stderr_has("not an ELF");
    assert!(!w.join("demo.run").exists());
}

#[test]
fn installer_as_stub_is_refused() {
    let w = workdir_with_source();
    w.write_spec(GOOD_SPEC);
    w.build("first.run");
    let run = w
        .airlock(&[
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "demo.run",
            "--stub",
            "first.run",
        ])
        .expect_code(1);
    run.stderr_has("first.run");
    assert!(!w.join("demo.run").exists());
}
