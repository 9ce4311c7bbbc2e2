//! The build cache (issue 12, part 1): frames and source digests reused between builds,
//! never changing the output. Every test gives `airlock` its own `AIRLOCK_CACHE_DIR`.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_fixtures::{paths, TreeSpec};
use serde_json::Value;
use util::{airlock_bin, flip_byte, u64_of, Workdir};

const SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";
const EPOCH: &str = "1700000000";

/// `airlock build --json` of the work folder's spec into `out` with cache folder `cache`.
fn build(w: &Workdir, cache: &Path, out: &str, extra: &[&str]) -> Value {
    let mut args = vec!["-q", "build", "-f", "airlock.yaml", "-o", out, "--json"];
    args.extend_from_slice(extra);
    w.airlock_env(
        &args,
        &[
            ("AIRLOCK_CACHE_DIR", cache.to_str().unwrap()),
            ("SOURCE_DATE_EPOCH", EPOCH),
        ],
    )
    .success()
    .json()
}

fn bytes(w: &Workdir, out: &str) -> Vec<u8> {
    fs::read(w.join(out)).unwrap()
}

/// Every frame entry file in `cache`.
fn frame_files(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(cache.join("frames")) else {
        return out;
    };
    for d in dirs {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn full_tree(w: &Workdir, seed: u64) {
    TreeSpec::full(seed).write(&w.join("src")).unwrap();
    w.write_spec(SPEC);
}

#[test]
fn a_cached_build_is_byte_identical_to_a_cold_one() {
    let w = Workdir::new();
    full_tree(&w, 1);
    let cache = w.join("cache");
    let cold = build(&w, &cache, "cold.run", &["--no-cache"]);
    assert_eq!(u64_of(&cold, "frames_reused"), 0, "{cold}");
    assert!(
        frame_files(&cache).is_empty(),
        "--no-cache filled the cache"
    );

    let first = build(&w, &cache, "first.run", &[]);
    let frames = u64_of(&first, "frame_count");
    assert!(frames > 5, "{first}");
    assert_eq!(u64_of(&first, "frames_reused"), 0, "{first}");
    assert_eq!(frame_files(&cache).len() as u64, frames);

    let second = build(&w, &cache, "second.run", &[]);
    assert_eq!(u64_of(&second, "frames_reused"), frames, "{second}");
    assert_eq!(u64_of(&second, "frames_encoded"), 0, "{second}");

    let cold_bytes = bytes(&w, "cold.run");
    assert!(
        bytes(&w, "first.run") == cold_bytes,
        "first cached build differs"
    );
    assert!(
        bytes(&w, "second.run") == cold_bytes,
        "reusing build differs"
    );
    w.run_installer(&w.join("second.run"), &["verify", "--deep"])
        .success();
}

#[test]
fn a_changed_file_recompresses_only_its_frame_and_unchanged_files_are_not_read() {
    let w = Workdir::new();
    full_tree(&w, 2);
    let cache = w.join("cache");
    build(&w, &cache, "a.run", &[]);
    // The fixture's files were just written (their ctime is now): the stat cache does not
    // trust them until they are older than its racy window, so the next build re-reads them.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let again = build(&w, &cache, "b.run", &[]);
    assert_eq!(
        u64_of(&again, "files_unread"),
        0,
        "racy entries trusted: {again}"
    );
    let third = build(&w, &cache, "c.run", &[]);
    let files = u64_of(&third, "files");
    assert!(
        u64_of(&third, "files_unread") == files,
        "unchanged files were read: {third}"
    );

    // One 4 MiB file (a frame of its own) changes, same size.
    let changed = w.join("src").join(paths::LARGE_RANDOM[1]);
    let mut content = fs::read(&changed).unwrap();
    for b in content.iter_mut().step_by(4096) {
        *b ^= 0x5a;
    }
    fs::write(&changed, &content).unwrap();
    let after = build(&w, &cache, "d.run", &[]);
    // Its frame, and the SBOM's (which names every file's digest, so it changes too).
    assert_eq!(u64_of(&after, "frames_encoded"), 2, "{after}");
    assert_eq!(
        u64_of(&after, "frames_reused"),
        u64_of(&after, "frame_count") - 2
    );
    assert!(
        u64_of(&after, "files_unread") < u64_of(&third, "files_unread"),
        "the changed file was not read: {after}"
    );
    build(&w, &cache, "cold.run", &["--no-cache"]);
    assert!(
        bytes(&w, "d.run") == bytes(&w, "cold.run"),
        "differs from a cold build"
    );
    assert!(
        bytes(&w, "d.run") != bytes(&w, "a.run"),
        "the change is missing"
    );
    w.run_installer(&w.join("d.run"), &["-q", "extract", "--target", "out"])
        .success();
    assert!(fs::read(w.join("out").join(paths::LARGE_RANDOM[1])).unwrap() == content);
}

#[test]
fn a_corrupt_cache_entry_is_not_used_and_is_rewritten() {
    let w = Workdir::new();
    full_tree(&w, 3);
    let cache = w.join("cache");
    let first = build(&w, &cache, "a.run", &[]);
    let frames = u64_of(&first, "frame_count");
    let entries = frame_files(&cache);
    // Damage the stored bytes of one entry, the header of another, truncate a third.
    flip_byte(&entries[0], fs::metadata(&entries[0]).unwrap().len() - 1);
    flip_byte(&entries[1], 20);
    let len = fs::metadata(&entries[2]).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&entries[2])
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let again = build(&w, &cache, "b.run", &[]);
    assert_eq!(u64_of(&again, "frames_encoded"), 3, "{again}");
    assert_eq!(u64_of(&again, "frames_reused"), frames - 3, "{again}");
    assert!(
        bytes(&w, "a.run") == bytes(&w, "b.run"),
        "damaged entries leaked"
    );
    w.run_installer(&w.join("b.run"), &["verify", "--deep"])
        .success();
    let third = build(&w, &cache, "c.run", &[]);
    assert_eq!(
        u64_of(&third, "frames_reused"),
        frames,
        "not rewritten: {third}"
    );
}

#[test]
fn concurrent_builds_sharing_a_cache_both_write_correct_installers() {
    let w = Workdir::new();
    full_tree(&w, 4);
    let cache = w.join("cache");
    build(&w, &cache, "cold.run", &["--no-cache"]);
    let spawn = |out: &str| {
        Command::new(airlock_bin())
            .current_dir(w.path())
            .args(["-q", "build", "-f", "airlock.yaml", "-o", out])
            .env("AIRLOCK_CACHE_DIR", &cache)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env_remove("AIRLOCK_STUB")
            .spawn()
            .unwrap()
    };
    for round in 0..2 {
        let (x, y) = (format!("x{round}.run"), format!("y{round}.run"));
        let mut a = spawn(&x);
        let mut b = spawn(&y);
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        assert!(
            bytes(&w, &x) == bytes(&w, "cold.run"),
            "round {round}: {x} differs"
        );
        assert!(
            bytes(&w, &y) == bytes(&w, "cold.run"),
            "round {round}: {y} differs"
        );
    }
    let leftovers: Vec<_> = frame_files(&cache)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn eviction_keeps_the_cache_under_its_bound_and_prune_empties_it() {
    let w = Workdir::new();
    full_tree(&w, 5);
    let cache = w.join("cache");
    let cache_env = [("AIRLOCK_CACHE_DIR", cache.to_str().unwrap())];
    build(&w, &cache, "big.run", &[]);
    let info = w
        .airlock_env(&["cache", "info", "--json"], &cache_env)
        .success()
        .json();
    let full = u64_of(&info, "frames_bytes");
    assert!(full > 8 << 20, "{info}");
    assert_eq!(
        full,
        frame_files(&cache)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );

    build(&w, &cache, "small.run", &["--cache-max", "5M"]);
    let info = w
        .airlock_env(&["cache", "info", "--json"], &cache_env)
        .success()
        .json();
    let kept = u64_of(&info, "frames_bytes");
    assert!(kept <= 5 << 20 && kept > 0, "{info}");

    w.airlock_env(&["cache", "prune", "--max", "1K"], &cache_env)
        .success();
    let kept: u64 = frame_files(&cache)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(kept <= 1024, "{kept}");
    w.airlock_env(&["cache", "prune"], &cache_env).success();
    assert!(frame_files(&cache).is_empty());
    w.airlock_env(&["build", "-o", "x.run", "--cache-max", "lots"], &cache_env)
        .expect_code(2)
        .stderr_has("failed to read size");
}
