//! Tests that need root: the installer in an empty chroot, and an extract into a filesystem
//! that is too small. Mounts happen inside `unshare --mount --fork`, so they vanish with the
//! namespace even if a test fails half-way.

mod util;

use std::ffi::OsStr;
use std::fs;

use airlock_fixtures::{compare_trees, TreeSpec};
use util::{have_command, is_root, prerequisite, sizes_in, u64_of, Workdir};

const SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";

/// Runs `/demo.run ARGS` chrooted into `$1` with procfs mounted at `$1/proc`.
const CHROOT_WITH_PROC: &str = r#"d=$1; shift
unshare --mount --fork sh -c 'd=$1; shift; mount -t proc proc "$d/proc" && exec chroot "$d" /demo.run "$@"' sh "$d" "$@""#;

#[test]
fn installer_runs_in_an_empty_chroot() {
    if !util::root_with_mounts("installer_runs_in_an_empty_chroot") {
        return;
    }
    let w = Workdir::new();
    TreeSpec::small(1).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    w.build("demo.run");
    let root = w.join("chroot");
    fs::create_dir_all(root.join("proc")).unwrap();
    fs::rename(w.join("demo.run"), root.join("demo.run")).unwrap();
    let chroot_run = |args: &[&str]| {
        let mut all: Vec<&OsStr> = vec![root.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        w.sh(CHROOT_WITH_PROC, &all)
    };

    chroot_run(&["-q", "verify"]).success();
    chroot_run(&["-q", "extract", "--target", "/out"]).success();

    compare_trees(&w.join("src"), &root.join("out"))
        .unwrap_or_else(|e| panic!("extracted tree differs: {e:#}"));
    assert!(
        names_in_proc_is_empty(&root),
        "procfs is still mounted outside the namespace"
    );
}

fn names_in_proc_is_empty(root: &std::path::Path) -> bool {
    util::names_in(&root.join("proc")).is_empty()
}

#[test]
fn installer_without_proc_finds_itself_through_argv0() {
    if !prerequisite(
        is_root(),
        "installer_without_proc_finds_itself_through_argv0",
        "needs root (chroot)",
    ) || !prerequisite(
        have_command("chroot"),
        "installer_without_proc_finds_itself_through_argv0",
        "needs chroot",
    ) {
        return;
    }
    let w = Workdir::new();
    TreeSpec::small(2).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    w.build("demo.run");
    let root = w.join("chroot");
    fs::create_dir(&root).unwrap();
    fs::rename(w.join("demo.run"), root.join("demo.run")).unwrap();

    // No /proc in the chroot: the stub falls back to argv[0] (stub/src/selfexe.rs).
    let run = w
        .sh(
            r#"exec chroot "$1" /demo.run info --json"#,
            &[root.as_os_str()],
        )
        .success();

    let info = run.json();
    assert_eq!(info["name"], "demo", "{info}");
    assert_eq!(info["file"], "/demo.run", "found through argv[0]: {info}");
    assert_eq!(
        u64_of(&info, "file_len"),
        fs::metadata(root.join("demo.run")).unwrap().len()
    );
    let verify = w.sh(
        r#"exec chroot "$1" /demo.run -q verify"#,
        &[root.as_os_str()],
    );
    verify.success();
}

#[test]
fn extract_into_a_filesystem_that_is_too_small_is_refused_and_writes_nothing() {
    if !util::root_with_mounts(
        "extract_into_a_filesystem_that_is_too_small_is_refused_and_writes_nothing",
    ) {
        return;
    }
    let w = Workdir::new();
    let tree = TreeSpec::full(3).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    let installer = w.build("demo.run");
    let mnt = w.join("mnt");
    fs::create_dir(&mnt).unwrap();

    // Mount a 2 MiB tmpfs, extract into it, then list what is left on it (one name a line,
    // after a marker), all inside one mount namespace.
    let script = r#"unshare --mount --fork sh -c '
        mount -t tmpfs -o size=2m tmpfs "$1" || exit 99
        "$2" extract --target "$1"; rc=$?
        echo "--- left on the tmpfs:"; ls -A "$1"
        exit $rc' sh "$1" "$2""#;
    let run = w.sh(script, &[mnt.as_os_str(), installer.as_os_str()]);

    assert_ne!(
        run.code,
        Some(99),
        "mounting the tmpfs failed:\n{}",
        run.describe()
    );
    let run = run.expect_code(1);
    assert!(
        run.stderr.contains("space"),
        "the message does not mention space:\n{}",
        run.describe()
    );
    // Both numbers: what is needed (at least the tree's bytes) and what is available (the
    // 2 MiB tmpfs at most).
    let sizes = sizes_in(&run.stderr);
    let need = tree.bytes as f64;
    assert!(
        sizes.iter().any(|&s| s >= need * 0.95),
        "no size >= the {need} bytes needed in:\n{}",
        run.describe()
    );
    assert!(
        sizes.iter().any(|&s| s <= 2.2e6),
        "no size <= the 2 MiB available in:\n{}",
        run.describe()
    );
    let left = run
        .stdout
        .split("--- left on the tmpfs:\n")
        .nth(1)
        .expect("the script lists the tmpfs");
    assert_eq!(
        left.trim(),
        "",
        "the extract left entries on the tmpfs:\n{}",
        run.describe()
    );
}
