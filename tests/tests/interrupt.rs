//! A run killed with SIGKILL at any moment (power cut, OOM killer, `kill -9`) must never
//! leave a partial or wrong file at a final path, and a re-run must converge to exactly what
//! an uninterrupted run gives. Here: `extract` of a large, multi-frame tree, killed at ten
//! points spread over the time a full run takes, then re-run. (The same sweep over `install`
//! lives with the install tests.)
//!
//! The killed child is always reaped (`wait`) before the target is inspected: only then has
//! every one of its threads stopped writing.

mod util;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airlock_fixtures::{compare_trees, TreeSpec};
use util::Workdir;

const ROOT_SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";

/// How many kill points the test tries.
const KILLS: u32 = 10;

/// Where the kills land, in per mille of an uninterrupted run: spread over the whole run,
/// denser towards its end, where the short move-into-place step happens.
const KILL_POINTS: [u32; KILLS as usize] = [0, 150, 300, 450, 600, 750, 850, 920, 960, 990];

/// The delay before the `i`-th kill, at least a few milliseconds (so the process has at
/// least started its work).
fn kill_delay(i: u32, full: Duration) -> Duration {
    (full * KILL_POINTS[i as usize] / 1000).max(Duration::from_millis(3))
}

/// Spawns `cmd` (output discarded), retrying while the program file is busy (`ETXTBSY`).
fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("failed to spawn {cmd:?}: {e}"),
        }
    }
}

/// Starts `cmd`, sends it SIGKILL after `delay` (`Child::kill`), reaps it. Returns whether
/// it was still running when killed (false: it had already finished).
fn run_and_kill(cmd: Command, delay: Duration) -> bool {
    let mut child = spawn(cmd);
    std::thread::sleep(delay);
    let running = child.try_wait().expect("poll the child").is_none();
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    if running {
        use std::os::unix::process::ExitStatusExt;
        // It may have exited on its own between the poll and the kill.
        return status.signal() == Some(9);
    }
    false
}

/// Starts `cmd` (an extract into `target`) and sends it SIGKILL as soon as a first entry
/// appears at a final path of `target` (a name other than a staging folder): that is, in
/// the middle of its move-into-place step. Reaps it; returns whether it was still running.
fn run_and_kill_while_placing(cmd: Command, target: &Path) -> bool {
    let mut child = spawn(cmd);
    loop {
        if child.try_wait().expect("poll the child").is_some() {
            return false;
        }
        let placed = fs::read_dir(target).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                !e.file_name()
                    .to_string_lossy()
                    .starts_with(".airlock-extract-")
            })
        });
        if placed {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    use std::os::unix::process::ExitStatusExt;
    child.wait().expect("reap the child").signal() == Some(9)
}

/// Every regular file and symlink under `target`, outside `.airlock-extract-*` staging
/// folders, equals the one at the same path under `src` (bytes, resp. link target).
/// Returns how many files were checked.
fn final_paths_match_source(src: &Path, target: &Path) -> Result<usize, String> {
    let mut checked = 0;
    if !target.exists() {
        // Killed before it created the target: nothing to check. (This, not a race with the
        // dying child, made the first draft of this test flaky.)
        return Ok(0);
    }
    let mut stack = vec![target.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(target).unwrap();
            let ty = e.file_type().unwrap();
            if d == target
                && e.file_name()
                    .to_string_lossy()
                    .starts_with(".airlock-extract-")
            {
                // Staging: partial files may live here (and only here).
                continue;
            }
            let original = src.join(rel);
            if ty.is_dir() {
                if !original.is_dir() || original.is_symlink() {
                    return Err(format!("{} is a folder, not in the source", rel.display()));
                }
                stack.push(p);
            } else if ty.is_symlink() {
                let got = fs::read_link(&p).unwrap();
                let want = fs::read_link(&original)
                    .map_err(|e| format!("{}: a symlink the source lacks ({e})", rel.display()))?;
                if got != want {
                    return Err(format!(
                        "{}: symlink to {} instead of {}",
                        rel.display(),
                        got.display(),
                        want.display()
                    ));
                }
            } else if ty.is_file() {
                let got = fs::read(&p).unwrap();
                let want = fs::read(&original)
                    .map_err(|e| format!("{}: a file the source lacks ({e})", rel.display()))?;
                if got != want {
                    return Err(format!(
                        "{} is partial or different: {} bytes, the source has {}",
                        rel.display(),
                        got.len(),
                        want.len()
                    ));
                }
                checked += 1;
            } else {
                return Err(format!("{}: unexpected file type {ty:?}", rel.display()));
            }
        }
    }
    Ok(checked)
}

fn staging_folders(target: &Path) -> Vec<String> {
    util::names_in(target)
        .into_iter()
        .filter(|n| n.starts_with(".airlock-extract-"))
        .collect()
}

#[test]
fn extract_killed_at_many_points_then_rerun_equals_an_uninterrupted_extract() {
    let w = Workdir::new();
    let summary = TreeSpec::full(3).write(&w.join("src")).unwrap();
    assert!(
        summary.bytes > 36 << 20,
        "the full tree spans several frames: {summary:?}"
    );
    w.write_spec(ROOT_SPEC);
    let installer = w.build("demo.run");
    let src = w.join("src");

    // An uninterrupted extract, for its duration (and as a sanity check of the comparison).
    let full = w
        .run_installer(&installer, &["-q", "extract", "--target", "reference"])
        .success();
    compare_trees(&src, &w.join("reference"))
        .unwrap_or_else(|e| panic!("the uninterrupted extract differs: {e:#}"));
    // Timed again with the installer in the page cache, as the killed runs will have it.
    let warm = w
        .run_installer(&installer, &["-q", "extract", "--target", "timed"])
        .success();
    let duration = full.elapsed.min(warm.elapsed);
    eprintln!(
        "uninterrupted extract: {:?} (cold), {:?} (warm)",
        full.elapsed, warm.elapsed
    );

    let mut killed_running = 0;
    // Ten kills at points in time, then three while entries move into place.
    for i in 0..KILLS + 3 {
        let target = w.join(format!("t{i}"));
        let cmd = w.installer_command(
            &installer,
            &["-q", "extract", "--target", target.to_str().unwrap()],
        );
        let (killed, delay) = if i < KILLS {
            let delay = kill_delay(i, duration);
            (run_and_kill(cmd, delay), format!("{delay:?}"))
        } else {
            (
                run_and_kill_while_placing(cmd, &target),
                "the first entry was placed".to_owned(),
            )
        };
        killed_running += u32::from(killed);
        let staging = staging_folders(&target);
        let checked = final_paths_match_source(&src, &target)
            .unwrap_or_else(|e| panic!("kill #{i} after {delay}: a final path is wrong: {e}"));
        eprintln!(
            "kill #{i} after {delay}: killed while running: {killed}; {checked} complete \
             file(s) at final paths, staging left: {staging:?}"
        );

        w.run_installer(
            &installer,
            &["-q", "extract", "--target", target.to_str().unwrap()],
        )
        .success();
        compare_trees(&src, &target)
            .unwrap_or_else(|e| panic!("kill #{i} after {delay}, then re-run: {e:#}"));
        assert_eq!(
            staging_folders(&target),
            Vec::<String>::new(),
            "kill #{i}: the re-run left a staging folder"
        );
    }
    assert!(
        killed_running >= KILLS / 2,
        "only {killed_running} of {KILLS} kills hit a running extract: the kill points do \
         not cover the run"
    );
}
/// `install --root` (engine `none`) of the same tree, killed at ten points of an
/// uninterrupted run, each into its own root, then re-run: the re-run completes, the result
/// has exactly the paths of an uninterrupted install, and `uninstall` then leaves no file and
/// no process (the registry daemon a killed run started is adopted, not duplicated).
#[test]
fn install_killed_at_many_points_then_rerun_equals_an_uninterrupted_install() {
    let w = Workdir::new();
    TreeSpec::full(3).write(&w.join("src")).unwrap();
    w.write_spec(ROOT_SPEC);
    let installer = w.build("demo.run");
    let install = |root: &Path, addr: &str| {
        let mut c = w.installer_command(&installer, &["-q", "install", "--root"]);
        c.arg(root).args(["--listen", addr, "--yes"]);
        c
    };
    let uninstall = |root: &Path| {
        w.run_installer(
            &root.join("var/lib/airlock/demo-1.0.run"),
            &["-q", "uninstall", "--root", root.to_str().unwrap()],
        )
        .success();
    };
    let daemons = |root: &Path| -> Vec<u32> {
        let copy = root.join("var/lib/airlock/demo-1.0.run");
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|&b| b == 0).next() == Some(copy.as_os_str().as_encoded_bytes())
                })
            })
            .collect()
    };

    let reference = w.join("ref");
    let start = std::time::Instant::now();
    let status = install(&reference, &util::free_addr()).status().unwrap();
    let full = start.elapsed();
    assert!(status.success(), "uninterrupted install failed: {status}");
    let want = util::tree(&reference);
    uninstall(&reference);

    let mut killed_running = 0;
    for i in 0..KILLS {
        let root = w.join(format!("root{i}"));
        let addr = util::free_addr();
        if run_and_kill(install(&root, &addr), kill_delay(i, full)) {
            killed_running += 1;
        }
        let again = util::run(install(&root, &addr));
        assert_eq!(
            again.code,
            Some(0),
            "re-run after kill {i}: {}",
            again.describe()
        );
        assert_eq!(
            util::tree(&root),
            want,
            "after kill {i} at {:?}",
            kill_delay(i, full)
        );
        assert_eq!(
            daemons(&root).len(),
            1,
            "one registry daemon after kill {i}"
        );
        let record = fs::read_to_string(root.join("var/lib/airlock/demo.json")).unwrap();
        uninstall(&root);
        assert_eq!(
            util::tree(&root),
            Vec::<String>::new(),
            "uninstall after kill {i}; the record was:\n{record}"
        );
        assert!(
            daemons(&root).is_empty(),
            "a daemon survived uninstall after kill {i}"
        );
    }
    assert!(
        killed_running >= 3,
        "kills must land mid-run: only {killed_running} did"
    );
}
