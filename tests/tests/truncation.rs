//! The first stage in front of the stub (issue 15 part 2; payload-format/SPEC.md, "First
//! stage"): every truncation at or beyond 64 KiB says "truncated" with exit code 3 instead of
//! crashing, and the untruncated installer still runs everywhere it ran before (an empty
//! chroot, a read-only mount), with its arguments, environment and `AIRLOCK_INSTALLER`.
//!
//! Regression: of 30 random truncations of a 16 MiB installer, 9 were killed with SIGSEGV
//! (exit 139): every cut inside the stub's loaded segments crashed before our code ran.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use airlock_fixtures::{seeded_bytes, TreeSpec};
use util::{
    contains_number, have_command, is_root, prerequisite, run, run_with_arg0, truncated_copy,
    u64_of, Run, Workdir,
};

/// Below this the kernel may refuse the file ("exec format error"); at or above it every cut
/// must be explained.
const LIMIT: u64 = 64 * 1024;

const SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";

/// A small installer: a few files and 1 MiB of incompressible data, so the payload spans
/// several frames after the ~10 MB program part.
fn small_installer(w: &Workdir, seed: u64) -> PathBuf {
    TreeSpec::small(seed).write(&w.join("src/tree")).unwrap();
    w.write_file("src/random.bin", seeded_bytes(seed, 1 << 20));
    w.write_spec(SPEC);
    w.build("demo.run")
}

/// Where the parts of `installer` lie, from its first stage's record and `inspect --json`.
struct Layout {
    stub_offset: u64,
    stub_end: u64,
    payload_offset: u64,
    file_len: u64,
}

fn layout(w: &Workdir, installer: &Path) -> Layout {
    let bytes = fs::read(installer).unwrap();
    // The record: the 32-byte descriptor of the note named "AIRLOCK\0", type 1, in the first
    // page (the note's header is namesz 8, descsz 32, type 1, then the name).
    let mut header = Vec::new();
    for v in [8u32, 32, 1] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    header.extend_from_slice(b"AIRLOCK\0");
    let at = bytes[..4096]
        .windows(header.len())
        .position(|w| w == header)
        .expect("the installer starts with a first stage")
        + header.len();
    let u = |o: usize| u64::from_le_bytes(bytes[at + o..at + o + 8].try_into().unwrap());
    let inspect = w.inspect_json(installer);
    let l = Layout {
        stub_offset: u(8),
        stub_end: u(8) + u(16),
        payload_offset: u64_of(&inspect, "payload_offset"),
        file_len: bytes.len() as u64,
    };
    assert_eq!(u(24), l.file_len, "the record holds the installer's length");
    assert_eq!(l.stub_offset % 4096, 0);
    assert!(l.stub_offset < LIMIT && l.stub_end <= l.payload_offset);
    l
}

/// 300 cut lengths spread over `[LIMIT, len)`, deterministic, off page boundaries, plus the
/// boundaries themselves (the stub's start and end, the payload's start, one byte short).
fn cuts(l: &Layout) -> Vec<u64> {
    let n = 300u64;
    let span = l.file_len - LIMIT;
    let mut cuts: Vec<u64> = (0..n - 6)
        .map(|i| LIMIT + span * i / (n - 6) + (i * 2_654_435_761) % 4093)
        .map(|c| c.min(l.file_len - 1))
        .collect();
    cuts.extend([
        LIMIT,
        l.stub_offset + 4096,
        l.stub_end - 1,
        l.stub_end,
        l.payload_offset + 32,
        l.file_len - 1,
    ]);
    cuts.sort_unstable();
    cuts.dedup();
    assert!(cuts.len() >= 290, "{} distinct cuts", cuts.len());
    cuts
}

#[test]
fn every_truncation_from_64_kib_on_exits_3_and_says_how_much_is_missing() {
    let w = Workdir::new();
    let installer = small_installer(&w, 1);
    let l = layout(&w, &installer);
    let cuts = cuts(&l);
    let failures = Mutex::new(Vec::new());
    let next = Mutex::new(cuts.iter());
    std::thread::scope(|s| {
        for worker in 0..3 {
            let (w, installer, failures, next, l) = (&w, &installer, &failures, &next, &l);
            s.spawn(move || loop {
                let Some(&cut) = next.lock().unwrap().next() else {
                    return;
                };
                let path = w.join(format!("cut-{worker}.run"));
                truncated_copy(installer, &path, cut);
                let args: &[&str] = if cut % 2 == 0 { &["info"] } else { &["verify"] };
                let r = w.run_installer(&path, args);
                fs::remove_file(&path).unwrap();
                let missing = l.file_len - cut;
                let mut wrong = Vec::new();
                if r.code != Some(3) {
                    wrong.push("exit code is not 3".to_owned());
                }
                if !r.stderr.contains("truncated") {
                    wrong.push("stderr does not say \"truncated\"".to_owned());
                }
                if !contains_number(&r.stderr, missing) {
                    wrong.push(format!("stderr does not name the {missing} missing bytes"));
                }
                if !wrong.is_empty() {
                    failures.lock().unwrap().push(format!(
                        "cut at {cut} of {}: {}\n{}",
                        l.file_len,
                        wrong.join("; "),
                        r.describe()
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cuts went wrong:\n\n{}",
        failures.len(),
        cuts.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_first_stage_prints_exactly_the_stubs_truncation_message() {
    let w = Workdir::new();
    let installer = small_installer(&w, 2);
    let l = layout(&w, &installer);
    // Cut inside the payload: the stub, run on the file, explains it from the payload header.
    let cut = l.payload_offset + (l.file_len - l.payload_offset) / 2;
    let path = w.join("cut.run");
    truncated_copy(&installer, &path, cut);
    let first = w.run_installer(&path, &["info"]).expect_code(3);
    let stub = w.run_stub_on(&path, &["info"]).expect_code(3);
    assert_eq!(first.stderr, stub.stderr);
    assert_eq!(
        first.stderr,
        format!(
            "error: installer is truncated: it is {cut} bytes but should be {} ({} bytes \
             missing); copy or download it again\n",
            l.file_len,
            l.file_len - cut
        )
    );
    // Cut inside the stub: the reader learns the whole length from the first stage's record.
    truncated_copy(&installer, &path, l.stub_end - 100_000);
    let stub = w.run_stub_on(&path, &["info"]).expect_code(3);
    assert!(
        contains_number(&stub.stderr, l.file_len - (l.stub_end - 100_000)),
        "{}",
        stub.describe()
    );
    w.airlock(&["inspect", "cut.run"])
        .expect_code(3)
        .stderr_has("truncated");
}

#[test]
fn a_short_first_part_with_a_002_sibling_is_handed_to_the_stub() {
    let w = Workdir::new();
    let installer = small_installer(&w, 3);
    let l = layout(&w, &installer);
    let path = w.join("part.run");
    truncated_copy(&installer, &path, l.payload_offset + 4096);
    // Alone, the short file is a truncated installer.
    w.run_installer(&path, &["--version"])
        .expect_code(3)
        .stderr_has("truncated");
    // With `part.run.002` beside it, it is the first part of a split installer: the stub runs
    // (and answers `--version` without reading the payload).
    fs::write(w.join("part.run.002"), b"rest").unwrap();
    let r = w.run_installer(&path, &["--version"]).success();
    assert!(r.stdout.starts_with("airlock-stub "), "{}", r.describe());
    // Shorter than the stub itself, there is nothing to hand over.
    truncated_copy(&installer, &path, l.stub_end - 1);
    w.run_installer(&path, &["--version"])
        .expect_code(3)
        .stderr_has("truncated");
}

#[test]
fn the_installer_keeps_its_arguments_environment_and_airlock_installer() {
    let w = Workdir::new();
    let installer = small_installer(&w, 4);
    // argv[0] reaches the stub unchanged (the bare run prints it in its usage).
    let r = run_with_arg0(w.installer_command(&installer, &[]), "./my-demo.run").success();
    assert!(r.stdout.contains("./my-demo.run"), "{}", r.describe());
    // The stub reads the installer itself, not the memfd it runs from.
    let info = w
        .run_installer(&installer, &["info", "--json"])
        .success()
        .json();
    assert_eq!(info["file"], installer.to_str().unwrap(), "{info}");
    assert_eq!(
        u64_of(&info, "file_len"),
        fs::metadata(&installer).unwrap().len()
    );
    // Run by a relative path, the stub still gets an absolute one.
    let r = w.sh("exec ./demo.run info --json", &[]).success();
    assert_eq!(r.json()["file"], installer.to_str().unwrap());
    // The environment passes through: RUST_LOG turns on the stub's debug log.
    let mut cmd = w.installer_command(&installer, &["info"]);
    cmd.env("RUST_LOG", "debug");
    let r = run(cmd).success();
    assert!(r.stderr.contains("mapped installer"), "{}", r.describe());
    // AIRLOCK_INSTALLER set by the caller keeps its meaning: operate on that file.
    let other = Workdir::new();
    other.write_file("src/x", "x");
    other.write_spec("name: other\nversion: \"9\"\nfiles:\n  - src: src/\n    dest: /\n");
    let other_run = other.build("other.run");
    let mut cmd = w.installer_command(&installer, &["info", "--json"]);
    cmd.env("AIRLOCK_INSTALLER", &other_run);
    let r = run(cmd).success();
    assert_eq!(r.json()["name"], "other", "{}", r.describe());
    // And the bare stub reads an installer with a first stage through it.
    let r = w.run_stub_on(&installer, &["-q", "verify"]);
    r.success();
}

#[test]
fn the_installer_runs_in_an_empty_chroot_and_from_a_read_only_mount() {
    let test = "the_installer_runs_in_an_empty_chroot_and_from_a_read_only_mount";
    if !util::root_with_mounts(test) {
        return;
    }
    let w = Workdir::new();
    let installer = small_installer(&w, 5);
    // An empty chroot: no /proc, /dev, /tmp or libraries, only the installer.
    let root = w.join("chroot");
    fs::create_dir(&root).unwrap();
    fs::copy(&installer, root.join("demo.run")).unwrap();
    let r = w
        .sh(
            r#"exec chroot "$1" /demo.run info --json"#,
            &[root.as_os_str()],
        )
        .success();
    assert_eq!(r.json()["file"], "/demo.run");
    w.sh(
        r#"exec chroot "$1" /demo.run -q verify"#,
        &[root.as_os_str()],
    )
    .success();
    w.sh(
        r#"exec chroot "$1" /demo.run -q extract --target /out random.bin"#,
        &[root.as_os_str()],
    )
    .success();
    assert_eq!(
        fs::read(root.join("out/random.bin")).unwrap(),
        seeded_bytes(5, 1 << 20)
    );
    // A truncated copy in the same empty chroot still explains itself.
    truncated_copy(&installer, &root.join("cut.run"), LIMIT + 12_345);
    w.sh(r#"exec chroot "$1" /cut.run info"#, &[root.as_os_str()])
        .expect_code(3)
        .stderr_has("truncated");

    // A read-only bind mount (a write-protected stick): nothing is written beside the file.
    let stick = w.join("stick");
    fs::create_dir(&stick).unwrap();
    fs::copy(&installer, stick.join("demo.run")).unwrap();
    let script = r#"unshare --mount --fork sh -c '
        mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" || exit 90
        touch "$1/probe" 2>/dev/null && exit 91
        "$1/demo.run" -q verify && "$1/demo.run" -q extract --target "$2" random.bin
    ' sh "$1" "$2""#;
    let out = w.join("out");
    let r = w.sh(script, &[stick.as_os_str(), out.as_os_str()]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        fs::read(out.join("random.bin")).unwrap(),
        seeded_bytes(5, 1 << 20)
    );
    assert_eq!(util::names_in(&stick), ["demo.run"]);
}

#[test]
fn where_memory_execution_is_refused_the_installer_says_so_and_how_to_run_it() {
    let test = "where_memory_execution_is_refused_the_installer_says_so_and_how_to_run_it";
    // vm.memfd_noexec (Linux 6.3+) is per PID namespace: set it to 2 in a fresh one.
    if !prerequisite(is_root(), test, "needs root (a PID namespace)")
        || !prerequisite(have_command("unshare"), test, "needs unshare")
        || !prerequisite(
            Path::new("/proc/sys/vm/memfd_noexec").exists(),
            test,
            "the kernel has no vm.memfd_noexec (before 6.3)",
        )
    {
        return;
    }
    let w = Workdir::new();
    let installer = small_installer(&w, 6);
    let host_setting = fs::read_to_string("/proc/sys/vm/memfd_noexec").unwrap();
    let script = r#"unshare --pid --fork --mount-proc sh -c '
        echo 2 > /proc/sys/vm/memfd_noexec || exit 90
        exec "$1" info
    ' sh "$1""#;
    let r: Run = w.sh(script, &[installer.as_os_str()]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("vm.memfd_noexec"), "{}", r.describe());
    // The message's way around it works: copy the program out, run it on the installer.
    let line = r.stderr.lines().next().unwrap();
    let recipe = line
        .split("instead: ")
        .nth(1)
        .expect("the message gives a command")
        .replace(" ARGS", " -q verify");
    let r = w.sh(&recipe, &[]);
    assert_eq!(r.code, Some(0), "{recipe}\n{}", r.describe());
    // The host's setting is untouched.
    assert_eq!(
        fs::read_to_string("/proc/sys/vm/memfd_noexec").unwrap(),
        host_setting
    );
}
