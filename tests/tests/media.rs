//! The media a field engineer meets: a filesystem that fills up during an extract, a target
//! too small for an install, the installer on a read-only USB stick, and a target mounted
//! `noexec`. Each runs as root inside `unshare --mount --fork` with small tmpfs mounts, so
//! the mounts vanish with the namespace even if a test fails half-way.

mod util;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_fixtures::{compare_trees, TreeSpec};
use util::{can_mount_in_namespace, free_addr, have_command, is_root, prerequisite, Run, Workdir};

const SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";

/// Root and permission to mount in a new mount namespace.
fn can_mount(test: &str) -> bool {
    prerequisite(is_root(), test, "needs root (mount)")
        && prerequisite(have_command("unshare"), test, "needs unshare")
        && prerequisite(
            can_mount_in_namespace(),
            test,
            "cannot mount inside `unshare --mount` here",
        )
}

/// Runs `script` with `args` as `$1...` in a fresh mount namespace.
fn in_namespace(w: &Workdir, script: &str, args: &[&OsStr]) -> Run {
    let mut all: Vec<&OsStr> = vec![OsStr::new(script)];
    all.extend_from_slice(args);
    w.sh(
        r#"s=$1; shift; exec unshare --mount --fork sh -c "$s" sh "$@""#,
        &all,
    )
}

/// The lines of stdout after the line `--- NAME:` up to the next `--- ` line, joined.
fn section(run: &Run, name: &str) -> String {
    let marker = format!("--- {name}:");
    let mut lines = run.stdout.lines().skip_while(|l| *l != marker);
    assert!(
        lines.next().is_some(),
        "no {name:?} section in:\n{}",
        run.describe()
    );
    lines
        .take_while(|l| !l.starts_with("--- "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn build(w: &Workdir, tree: TreeSpec) -> PathBuf {
    tree.write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
    w.build("demo.run")
}

/// Processes whose command line mentions `root` are killed (by pid) when this is dropped:
/// a registry daemon a failed install test left behind.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let needle = self.0.to_str().unwrap().as_bytes().to_vec();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_slice()))
            {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

#[test]
fn a_filesystem_that_fills_up_during_extract_gives_a_clear_error_and_leaves_nothing() {
    if !can_mount(
        "a_filesystem_that_fills_up_during_extract_gives_a_clear_error_and_leaves_nothing",
    ) {
        return;
    }
    let w = Workdir::new();
    let installer = build(&w, TreeSpec::full(5));
    let mnt = w.join("mnt");
    fs::create_dir(&mnt).unwrap();

    // The tmpfs has room for the tree plus 8 MiB, so preflight passes. As soon as the
    // staging folder appears, another process takes 20 MiB (fallocate: a few ms, long before
    // the 40 MiB are written), so the extract runs out of space while writing content. Then
    // the space is freed again and the extract re-run.
    let inspect = w.inspect_json(&installer);
    let need = util::u64_of(&inspect, "total_size") + 4096 * util::u64_of(&inspect, "entry_count");
    let size_kib = (need >> 10) + 8192;
    let script = r#"
        mount -t tmpfs -o "size=$4k" tmpfs "$1" || exit 99
        mkdir "$1/target"
        ( d="$1/target"; while :; do for f in "$d"/.airlock-extract-*; do [ -e "$f" ] && break 2; done; done
          fallocate -l 20m "$1/filler" && echo "filled: 20 MiB taken" >&2 ) &
        "$2" extract --target "$1/target" >&2; rc=$?
        wait
        echo "--- left in target:"; ls -A "$1/target"
        echo "--- final paths:"; find "$1/target" -mindepth 1 -not -path "*/.airlock-extract-*" | head
        rm -f "$1/filler"
        echo "--- rerun:"; "$2" -q extract --target "$1/target" >&2; echo "rc=$?"
        cp -a "$1/target" "$3"
        exit $rc"#;
    // The filler races the extract: on a machine so busy that it loses, try again.
    let mut attempt = 0;
    let run = loop {
        attempt += 1;
        let copy = w.join(format!("after-rerun-{attempt}"));
        let run = in_namespace(
            &w,
            script,
            &[
                mnt.as_os_str(),
                installer.as_os_str(),
                copy.as_os_str(),
                OsStr::new(&size_kib.to_string()),
            ],
        );
        assert_ne!(run.code, Some(99), "mounting failed:\n{}", run.describe());
        if run.stderr.contains("ran out of space") || attempt == 3 {
            compare_trees(&w.join("src"), &copy)
                .unwrap_or_else(|e| panic!("the re-run after freeing space differs: {e:#}"));
            break run;
        }
        eprintln!(
            "attempt {attempt}: the filler came too late:\n{}",
            run.describe()
        );
    };
    let run = run.expect_code(1);
    run.stderr_has("ran out of space");
    run.stderr_has(&mnt.join("target").display().to_string());
    assert_eq!(
        section(&run, "left in target"),
        "",
        "the failed extract left entries (staging or final):\n{}",
        run.describe()
    );
    assert_eq!(section(&run, "final paths"), "", "{}", run.describe());
    assert_eq!(section(&run, "rerun"), "rc=0", "{}", run.describe());
}

#[test]
fn install_onto_a_filesystem_that_is_too_small_is_refused_in_preflight_and_changes_nothing() {
    if !can_mount(
        "install_onto_a_filesystem_that_is_too_small_is_refused_in_preflight_and_changes_nothing",
    ) {
        return;
    }
    let w = Workdir::new();
    let installer = build(&w, TreeSpec::full(6));
    let root = w.join("root");
    fs::create_dir(&root).unwrap();
    let _reaper = Reaper(root.clone());
    let addr = free_addr();
    let script = r#"
        mount -t tmpfs -o size=4m tmpfs "$1" || exit 99
        mkdir -p "$1/etc" && echo node-1 > "$1/etc/hostname"
        echo "--- before:"; find "$1" | sort
        "$2" install --root "$1" --listen "$3" --yes >&2; rc=$?
        echo "--- after:"; find "$1" | sort
        exit $rc"#;
    let run = in_namespace(
        &w,
        script,
        &[root.as_os_str(), installer.as_os_str(), OsStr::new(&addr)],
    );
    assert_ne!(run.code, Some(99), "mounting failed:\n{}", run.describe());
    let run = run.expect_code(1);
    run.stderr_has("preflight found 1 problem(s), nothing was changed");
    run.stderr_has("not enough free space in");
    assert_eq!(
        section(&run, "after"),
        section(&run, "before"),
        "the refused install changed the root:\n{}",
        run.describe()
    );
}

/// `info`, `verify`, `extract` and `install` + `uninstall` of the installer at `installer`
/// (inside the namespace: `$2`), with targets outside its folder. Prints the installer's
/// folder (`ls -la --full-time`) before and after as sections `before` and `after`.
const RUN_EVERYTHING: &str = r#"
    d=$(dirname "$2")
    echo "--- before:"; ls -la --full-time "$d"
    "$2" info >&2 || { echo "info failed" >&2; exit 11; }
    "$2" -q verify >&2 || { echo "verify failed" >&2; exit 12; }
    "$2" -q extract --target "$3/out" || { echo "extract failed" >&2; exit 13; }
    "$2" -q install --root "$3/root" --listen "$4" --yes || { echo "install failed" >&2; exit 14; }
    "$2" -q uninstall --root "$3/root" || { echo "uninstall failed" >&2; exit 15; }
    echo "--- after:"; ls -la --full-time "$d"
    echo "--- end"
"#;

fn check_everything_ran(w: &Workdir, run: &Run, work: &Path) {
    assert_eq!(
        run.code,
        Some(0),
        "a command failed next to a read-only or watched installer:\n{}",
        run.describe()
    );
    assert_eq!(
        section(run, "after"),
        section(run, "before"),
        "something was written next to the installer:\n{}",
        run.describe()
    );
    compare_trees(&w.join("src"), &work.join("out"))
        .unwrap_or_else(|e| panic!("extract from the stick differs: {e:#}"));
    assert_eq!(
        util::tree(&work.join("root")),
        Vec::<String>::new(),
        "uninstall left files"
    );
}

#[test]
fn an_installer_on_a_read_only_stick_runs_every_command_and_writes_nothing_beside_itself() {
    if !can_mount(
        "an_installer_on_a_read_only_stick_runs_every_command_and_writes_nothing_beside_itself",
    ) {
        return;
    }
    let w = Workdir::new();
    let installer = build(&w, TreeSpec::small(7));
    let stick = w.join("stick");
    let work = w.join("work");
    fs::create_dir(&stick).unwrap();
    fs::create_dir_all(work.join("root")).unwrap();
    let _reaper = Reaper(work.clone());
    let addr = free_addr();

    // A tmpfs with the installer on it, remounted read-only like a USB stick mounted `ro`.
    let script = format!(
        r#"
        mount -t tmpfs -o size=64m tmpfs "$1" || exit 99
        cp "$5" "$1/demo.run" && mount -o remount,ro "$1" || exit 98
        touch "$1/probe" 2>/dev/null && {{ echo "the stick is writable" >&2; exit 97; }}
        set -- "$1" "$1/demo.run" "$3" "$4"
        {RUN_EVERYTHING}"#
    );
    let run = in_namespace(
        &w,
        &script,
        &[
            stick.as_os_str(),
            OsStr::new("-"),
            work.as_os_str(),
            OsStr::new(&addr),
            installer.as_os_str(),
        ],
    );
    assert!(
        !matches!(run.code, Some(97..=99)),
        "setting up the read-only stick failed:\n{}",
        run.describe()
    );
    check_everything_ran(&w, &run, &work);

    // On a writable folder too, nothing appears beside the installer (no temp files, no
    // lock, no log) and the file itself is unchanged (mtime included).
    let usb = w.join("usb");
    fs::create_dir(&usb).unwrap();
    fs::copy(&installer, usb.join("demo.run")).unwrap();
    let work = w.join("work2");
    fs::create_dir_all(work.join("root")).unwrap();
    let _reaper2 = Reaper(work.clone());
    let addr = free_addr();
    let script = format!("set -- \"$1\" \"$1/demo.run\" \"$2\" \"$3\"\n{RUN_EVERYTHING}");
    let run = in_namespace(
        &w,
        &script,
        &[usb.as_os_str(), work.as_os_str(), OsStr::new(&addr)],
    );
    check_everything_ran(&w, &run, &work);
}

#[test]
fn an_install_root_on_a_noexec_mount_is_refused_in_preflight_naming_noexec() {
    if !can_mount("an_install_root_on_a_noexec_mount_is_refused_in_preflight_naming_noexec") {
        return;
    }
    let w = Workdir::new();
    let installer = build(&w, TreeSpec::small(8));
    let root = w.join("root");
    fs::create_dir(&root).unwrap();
    let _reaper = Reaper(root.clone());
    let addr = free_addr();
    let script = r#"
        mount -t tmpfs -o size=64m,noexec tmpfs "$1" || exit 99
        echo "--- before:"; find "$1" | sort
        "$2" install --root "$1" --listen "$3" --yes >&2; rc=$?
        echo "--- after:"; find "$1" | sort
        echo "--- extract:"; "$2" -q extract --target "$1/out" && echo ok
        exit $rc"#;
    let run = in_namespace(
        &w,
        script,
        &[root.as_os_str(), installer.as_os_str(), OsStr::new(&addr)],
    );
    assert_ne!(run.code, Some(99), "mounting failed:\n{}", run.describe());
    let run = run.expect_code(1);
    run.stderr_has("mounted noexec");
    run.stderr_has("programs installed there cannot run");
    assert_eq!(
        section(&run, "after"),
        section(&run, "before"),
        "the refused install changed the root:\n{}",
        run.describe()
    );
    // Extracting files (nothing runs from them) onto the same mount is fine.
    assert_eq!(section(&run, "extract"), "ok", "{}", run.describe());
}

#[test]
fn an_install_root_that_fills_up_during_install_fails_clearly_and_a_rerun_converges() {
    if !can_mount(
        "an_install_root_that_fills_up_during_install_fails_clearly_and_a_rerun_converges",
    ) {
        return;
    }
    let w = Workdir::new();
    let installer = build(&w, TreeSpec::full(9));
    let installer_len = fs::metadata(&installer).unwrap().len();
    // Room for the files, the installer copy and 8 MiB: preflight passes. A filler takes
    // space as soon as the extract's staging folder appears in the root: enough to stop the
    // files step, or only enough to stop the installer copy that follows it.
    let inspect = w.inspect_json(&installer);
    let need = util::u64_of(&inspect, "total_size")
        + 4096 * util::u64_of(&inspect, "entry_count")
        + installer_len;
    let size_kib = (need >> 10) + 8192;
    let cases = [
        (
            (installer_len >> 20) + 24,
            "the filesystem ran out of space (write file",
        ),
        (20, "failed to copy the installer to"),
    ];
    for (n, (filler_mib, message)) in cases.into_iter().enumerate() {
        let root = w.join(format!("root-{n}"));
        fs::create_dir(&root).unwrap();
        let _reaper = Reaper(root.clone());
        let addr = free_addr();
        let run =
            install_while_filling(&w, &installer, &root, &addr, size_kib, filler_mib, message);
        let run = run.expect_code(1);
        run.stderr_has(message);
        // What the failed install left: its own state (lock, record), and payload files
        // only if complete; no staging, no temp file, no installer copy.
        let failed = w.join(format!("failed-{n}"));
        for rel in util::tree(&failed) {
            let p = failed.join(&rel);
            if rel.starts_with("var") {
                assert!(
                    [
                        "var",
                        "var/lib",
                        "var/lib/airlock",
                        "var/lib/airlock/demo.json",
                        "var/lib/airlock/install.lock"
                    ]
                    .contains(&rel.as_str()),
                    "case {n}: the failed install left {rel}:\n{}",
                    run.describe()
                );
            } else if p.is_file() && !p.is_symlink() {
                assert_eq!(
                    fs::read(&p).unwrap(),
                    fs::read(w.join("src").join(&rel)).unwrap(),
                    "case {n}: {rel} is half-written"
                );
            }
            assert!(!rel.contains(".airlock-"), "case {n}: left {rel}");
        }
        assert_eq!(
            section(&run, "rerun"),
            "rc=0",
            "case {n}:\n{}",
            run.describe()
        );
        assert_eq!(
            section(&run, "uninstall"),
            "rc=0",
            "case {n}:\n{}",
            run.describe()
        );
        assert_eq!(
            section(&run, "after uninstall"),
            "",
            "case {n}: uninstall after the converged re-run left paths:\n{}",
            run.describe()
        );
        compare_trees(&w.join("src"), &w.join(format!("installed-{n}")))
            .unwrap_or_else(|e| panic!("case {n}: the re-run's files differ: {e:#}"));
    }
}

/// Mounts a `size_kib` tmpfs at `root`, installs while a filler takes `filler_mib` MiB as
/// soon as the staging folder appears, copies what is left to `failed-N`; then removes the
/// filler, grows the tmpfs to twice its size (a re-run stages every file again, so it needs
/// the space of a fresh install on top of the files already there), re-runs the install,
/// copies the result to `installed-N` and uninstalls. Retries while the filler came too late
/// (the install did not fail with `message`).
fn install_while_filling(
    w: &Workdir,
    installer: &Path,
    root: &Path,
    addr: &str,
    size_kib: u64,
    filler_mib: u64,
    message: &str,
) -> Run {
    let n = root
        .to_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .to_owned();
    let script = r#"
        mount -t tmpfs -o "size=$4k" tmpfs "$1" || exit 99
        ( d="$1"; while :; do for f in "$d"/.airlock-extract-*; do [ -e "$f" ] && break 2; done; done
          fallocate -l "$5m" "$1/filler" ) &
        "$2" install --root "$1" --listen "$3" --yes >&2; rc=$?
        wait
        rm -f "$1/filler"
        rm -rf "$6/failed-$7"; cp -a "$1" "$6/failed-$7"
        mount -o remount,size=$(( $4 * 2 ))k "$1"
        echo "--- rerun:"; "$2" -q install --root "$1" --listen "$3" --yes >&2; echo "rc=$?"
        mkdir "$6/installed-$7"
        for e in "$1"/*; do [ "$e" = "$1/var" ] || [ "$e" = "$1/etc" ] || cp -a "$e" "$6/installed-$7/"; done
        echo "--- uninstall:"; "$2" -q uninstall --root "$1" >&2; echo "rc=$?"
        echo "--- after uninstall:"; find "$1" -mindepth 1 | sort
        exit $rc"#;
    for attempt in 1..=3 {
        let _ = fs::remove_dir_all(w.join(format!("installed-{n}")));
        let run = in_namespace(
            w,
            script,
            &[
                root.as_os_str(),
                installer.as_os_str(),
                OsStr::new(addr),
                OsStr::new(&size_kib.to_string()),
                OsStr::new(&filler_mib.to_string()),
                w.path().as_os_str(),
                OsStr::new(&n),
            ],
        );
        assert_ne!(run.code, Some(99), "mounting failed:\n{}", run.describe());
        if run.stderr.contains(message) {
            return run;
        }
        eprintln!(
            "attempt {attempt}: the filler came too late:\n{}",
            run.describe()
        );
    }
    panic!("the filler never ran before the install finished");
}
