//! Damaged installers: a flipped byte in each part of the payload, and copies cut short.
//! Every case must end with exit code 3 and a message that says what is wrong.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_fixtures::images::ImageContent;
use airlock_fixtures::{compare_trees, seeded_bytes, FixtureRng, TreeSpec};
use util::{contains_number, flip_byte, names_in, truncated_copy, u64_of, Run, Workdir};

/// An installer with known content: `data/one.bin` (5 MiB of random bytes, first in the
/// raw stream, so the first frame holds only it) and `notes.txt` (small, in a later frame).
struct Built {
    w: Workdir,
    installer: PathBuf,
    payload_offset: u64,
    file_len: u64,
}

fn build() -> Built {
    let w = Workdir::new();
    w.write_file("src/data/one.bin", seeded_bytes(11, 5 << 20));
    w.write_file("src/notes.txt", "release notes\n".repeat(100));
    w.write_spec("name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n");
    let installer = w.build("demo.run");
    let inspect = w.inspect_json(&installer);
    let payload_offset = u64_of(&inspect, "payload_offset");
    let file_len = u64_of(&inspect, "file_len");
    assert_eq!(file_len, fs::metadata(&installer).unwrap().len());
    Built {
        w,
        installer,
        payload_offset,
        file_len,
    }
}

impl Built {
    /// A copy of the installer with the byte at `offset` flipped.
    fn flipped(&self, offset: u64) -> PathBuf {
        let path = self.w.join(format!("flipped-{offset}.run"));
        fs::copy(&self.installer, &path).unwrap();
        flip_byte(&path, offset);
        path
    }

    /// Extracts `installer` into a fresh, existing `target` and checks that the damage left
    /// the target as it was: no file, no staging folder.
    fn extract_fails_cleanly(&self, installer: &Path, target: &str) -> Run {
        let dir = self.w.join(target);
        fs::create_dir(&dir).unwrap();
        let run = self
            .w
            .run_installer(installer, &["extract", "--target", target])
            .expect_code(3);
        assert_eq!(
            names_in(&dir),
            Vec::<String>::new(),
            "the failed extract left entries:\n{}",
            run.describe()
        );
        run
    }
}

#[test]
fn flipped_byte_in_a_frame_is_reported_with_the_entry_it_damages() {
    let b = build();
    b.w.run_installer(&b.installer, &["verify"]).success();
    let bad = b.flipped(b.payload_offset + 64 + 1000);

    let run = b.extract_fails_cleanly(&bad, "out");
    run.stderr_has("data/one.bin");
    // Without the target folder existing beforehand, none is left behind either.
    let run =
        b.w.run_installer(&bad, &["extract", "--target", "fresh"])
            .expect_code(3);
    assert!(
        names_in(&b.w.join("fresh")).is_empty(),
        "the failed extract left entries:\n{}",
        run.describe()
    );
    // Only the damaged entry's content is unreadable: another one still extracts.
    b.w.run_installer(&bad, &["-q", "extract", "--target", "notes", "notes.txt"])
        .success();
    assert_eq!(
        fs::read(b.w.join("notes/notes.txt")).unwrap(),
        fs::read(b.w.join("src/notes.txt")).unwrap()
    );

    let run = b.w.run_installer(&bad, &["verify"]).expect_code(3);
    run.stderr_has("affecting data/one.bin");
    assert!(
        !run.stderr.contains("notes.txt"),
        "blames an entry outside the frame:\n{}",
        run.describe()
    );
}

#[test]
fn flipped_byte_in_the_index_is_reported_as_index_damage() {
    let b = build();
    let bad = b.flipped(b.file_len - 256 - 3);

    let run = b.extract_fails_cleanly(&bad, "out");
    run.stderr_has("index");

    let run = b.w.run_installer(&bad, &["verify"]).expect_code(3);
    run.stderr_has("index");
}

#[test]
fn flipped_byte_in_the_trailer_is_reported_as_trailer_damage() {
    let b = build();
    let bad = b.flipped(b.file_len - 100);

    let run = b.w.run_installer(&bad, &["verify"]).expect_code(3);
    run.stderr_has("trailer");
    b.w.run_installer(&bad, &["info"])
        .expect_code(3)
        .stderr_has("trailer");

    let run = b.extract_fails_cleanly(&bad, "out");
    run.stderr_has("trailer");
}

#[test]
fn flipped_byte_in_the_program_part_is_reported_as_stub_damage() {
    let b = build();
    // A damaged program may not run at all, so the pristine stub checks the damaged file.
    let bad = b.flipped(b.payload_offset / 2);

    let run = b.w.run_stub_on(&bad, &["verify"]).expect_code(3);
    assert!(
        run.stderr.contains("stub") || run.stderr.contains("program"),
        "damage not named:\n{}",
        run.describe()
    );
}

#[test]
fn truncated_installers_say_they_are_truncated_and_how_much_is_missing() {
    let b = build();
    let (po, len) = (b.payload_offset, b.file_len);
    // Cuts inside the program: the kernel may refuse to run such a file (ENOEXEC) or it may
    // crash before main, so the intact stub reads it through AIRLOCK_INSTALLER.
    let inside_program = [100, 4096, po / 2, po - 4097];
    // Cuts after the program: the file runs itself.
    let after_program = [
        po - 1,              // in the padding after the program
        po,                  // just after the stub: no payload at all
        po + 32,             // inside the payload header
        po + 64 + 1,         // at the start of the frames
        po + (len - po) / 2, // the middle of the payload
        len - 256,           // the whole trailer missing
        len - 100,           // inside the trailer
        len - 1,             // one byte short
    ];
    let mut cases: Vec<(u64, bool)> = inside_program.iter().map(|&c| (c, true)).collect();
    cases.extend(after_program.iter().map(|&c| (c, false)));

    let mut failures = Vec::new();
    for (cut, via_stub) in cases {
        let path = b.w.join(format!("cut-{cut}.run"));
        truncated_copy(&b.installer, &path, cut);
        let run = if via_stub {
            b.w.run_stub_on(&path, &["info"])
        } else {
            b.w.run_installer(&path, &["info"])
        };
        fs::remove_file(&path).unwrap();

        let mut wrong = Vec::new();
        if run.code != Some(3) {
            wrong.push("exit code is not 3".to_owned());
        }
        if !run.stderr.contains("truncated") {
            wrong.push("stderr does not say \"truncated\"".to_owned());
        }
        // Where the payload header survived, the file knows its full length.
        if cut >= po + 64 && !contains_number(&run.stderr, len - cut) {
            wrong.push(format!(
                "stderr does not name the {} missing bytes",
                len - cut
            ));
        }
        // Generous for a loaded CI machine; the 50 ms target is measured by bench/.
        if run.elapsed >= Duration::from_secs(1) {
            wrong.push(format!("took {:?}", run.elapsed));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "cut at {cut} of {len} bytes: {}\n{}",
                wrong.join("; "),
                run.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the cuts went wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// Sweeps: many random flips and cuts of one installer, counted per region.
//
// Sizes are set by environment variables so longer runs need no code change (see
// tests/README.md): AIRLOCK_SWEEP_SEED, AIRLOCK_SWEEP_FLIPS (1000), AIRLOCK_SWEEP_EXTRACT_EVERY
// (every 5th flip is also extracted), AIRLOCK_SWEEP_INSTALLS (30), AIRLOCK_SWEEP_CUTS (100).

/// Reads a numeric setting from the environment.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The seed of a sweep: `AIRLOCK_SWEEP_SEED`, else the clock (printed, so a failure can be
/// replayed).
fn sweep_seed() -> u64 {
    setting(
        "AIRLOCK_SWEEP_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    )
}

/// Where the parts of an installer lie, from its trailer (SPEC.md).
#[derive(Debug, Clone, Copy)]
struct Regions {
    payload_offset: u64,
    frames: (u64, u64),
    meta: (u64, u64),
    index: (u64, u64),
    file_len: u64,
}

impl Regions {
    fn of(file: &Path) -> Regions {
        let bytes = fs::read(file).unwrap();
        let t = &bytes[bytes.len() - 256..];
        let u = |at: usize| u64::from_le_bytes(t[at..at + 8].try_into().unwrap());
        let po = u(16);
        let (frames_len, meta_off, meta_len, index_off, index_len) =
            (u(32), u(40), u(48), u(56), u(64));
        let r = Regions {
            payload_offset: po,
            frames: (po + 64, po + 64 + frames_len),
            meta: (po + meta_off, po + meta_off + meta_len),
            index: (po + index_off, po + index_off + index_len),
            file_len: bytes.len() as u64,
        };
        assert_eq!(r.index.1, r.file_len - 256, "{r:?}");
        r
    }

    /// Name, range and share (per mille) of the flips of each region: every region gets
    /// flips even when it is tiny (header, meta, trailer).
    fn table(&self) -> [(&'static str, (u64, u64), u64); 6] {
        let po = self.payload_offset;
        [
            ("stub", (0, po), 200),
            ("header", (po, po + 64), 50),
            ("frames", self.frames, 400),
            ("meta", self.meta, 50),
            ("index", self.index, 150),
            ("trailer", (self.file_len - 256, self.file_len), 150),
        ]
    }

    /// A region (by share) and a uniform offset inside it.
    fn pick(&self, rng: &mut FixtureRng) -> (&'static str, u64) {
        let table = self.table();
        let mut roll = rng.below(1000);
        for (name, (start, end), share) in table {
            if roll < share {
                return (name, rng.range(start, end));
            }
            roll -= share;
        }
        unreachable!("the shares add up to 1000")
    }
}

/// The sweep's installer: a few MiB of small and large files (random and text, so both
/// raw and zstd frames), symlinks and hardlinks, and one image (gzip layers, raw frames).
fn build_sweep_installer() -> (Workdir, PathBuf) {
    let w = Workdir::new();
    TreeSpec::small(21).write(&w.join("src/tree")).unwrap();
    w.write_file("src/big/random.bin", seeded_bytes(22, 5 << 20));
    w.write_file(
        "src/big/text.txt",
        airlock_fixtures::text_bytes(23, 3 << 19),
    );
    airlock_fixtures::images::write_oci_layout(
        &w.join("images/app"),
        &[("1", ImageContent::new("sweep"), false)],
    )
    .unwrap();
    w.write_spec(
        "name: sweep\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n\
         images:\n  - ref: example.hub/library/app:1\n    from: oci:images/app:1\n",
    );
    let installer = w.build("sweep.run");
    (w, installer)
}

/// Paths under `target` (outside staging folders) that differ from `reference`: missing
/// there, another type, other bytes or another link target. Returns the paths and the
/// bytes of the wrong files.
fn wrong_final_paths(reference: &Path, target: &Path) -> (Vec<String>, u64) {
    let (mut wrong, mut bytes) = (Vec::new(), 0);
    for rel in util::tree(target) {
        if rel.starts_with(".airlock-extract-") {
            continue;
        }
        let (got, want) = (target.join(&rel), reference.join(&rel));
        let gm = fs::symlink_metadata(&got).unwrap();
        let same = match fs::symlink_metadata(&want) {
            Err(_) => false,
            Ok(wm) if gm.is_dir() => wm.is_dir(),
            Ok(wm) if gm.file_type().is_symlink() => {
                wm.file_type().is_symlink()
                    && fs::read_link(&got).unwrap() == fs::read_link(&want).unwrap()
            }
            Ok(wm) => wm.is_file() && fs::read(&got).unwrap() == fs::read(&want).unwrap(),
        };
        if !same {
            bytes += if gm.is_file() { gm.len() } else { 0 };
            wrong.push(rel);
        }
    }
    (wrong, bytes)
}

/// How long a run of a damaged file may take before it counts as hung and is killed.
const HANG_SECS: &str = "60";

/// Runs the damaged installer with `args` under `timeout -s KILL`: a flipped byte in the
/// program's code can make it loop forever (seen: an endless loop in extract's entry
/// selection). A hang ends with exit code 137 and counts in `hangs`.
fn run_damaged(w: &Workdir, file: &Path, args: &[&str]) -> util::Run {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-s", "KILL", HANG_SECS])
        .arg(file)
        .args(args)
        .current_dir(w.path())
        .env_remove("AIRLOCK_INSTALLER")
        .env_remove("AIRLOCK_STUB");
    util::run(cmd)
}

/// True when `run` was ended by [`run_damaged`]'s timeout.
fn hung(run: &util::Run) -> bool {
    run.code == Some(137)
}

/// Counts of one region of the sweep.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    flips: u64,
    /// `verify` by the damaged file itself exited 3.
    detected: u64,
    /// `verify` by the pristine stub on the damaged file exited 3.
    detected_by_pristine_stub: u64,
    /// Runs of the damaged file killed by a signal.
    crashes: u64,
    /// Runs of the damaged file that did not end within [`HANG_SECS`].
    hangs: u64,
    extracts: u64,
    extracts_refused: u64,
    installs: u64,
    installs_refused: u64,
    /// Bytes of files at final paths that differ from the source.
    bytes_lost: u64,
    /// Installs that left the damaged file as the persistent installer copy.
    copies_damaged: u64,
}

#[test]
fn a_thousand_random_byte_flips_are_all_caught_and_never_reach_a_final_path() {
    let seed = sweep_seed();
    let flips = setting("AIRLOCK_SWEEP_FLIPS", 1000);
    let extract_every = setting("AIRLOCK_SWEEP_EXTRACT_EVERY", 5).max(1);
    let installs = setting("AIRLOCK_SWEEP_INSTALLS", 30);
    eprintln!(
        "flip sweep: AIRLOCK_SWEEP_SEED={seed} AIRLOCK_SWEEP_FLIPS={flips} \
         AIRLOCK_SWEEP_EXTRACT_EVERY={extract_every} AIRLOCK_SWEEP_INSTALLS={installs}"
    );
    let (w, pristine) = build_sweep_installer();
    let regions = Regions::of(&pristine);
    eprintln!("installer: {} bytes, {regions:?}", regions.file_len);
    w.run_installer(&pristine, &["-q", "extract", "--target", "reference"])
        .success();
    let reference = w.join("reference");
    let damaged = w.join("damaged.run");
    fs::copy(&pristine, &damaged).unwrap();
    let install_every = flips.checked_div(installs).map_or(u64::MAX, |n| n.max(1));

    let mut rng = FixtureRng::new(seed);
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let start = std::time::Instant::now();
    for n in 0..flips {
        let (region, offset) = regions.pick(&mut rng);
        let t = tallies.entry(region).or_default();
        t.flips += 1;
        let in_stub = region == "stub";
        flip_byte(&damaged, offset);
        let what = format!("flip #{n} at offset {offset} ({region}, seed {seed})");

        let run = run_damaged(&w, &damaged, &["-q", "verify"]);
        t.crashes += u64::from(run.code.is_none());
        t.hangs += u64::from(hung(&run));
        if in_stub && run.code != Some(3) {
            eprintln!(
                "{what}: the damaged program's own verify gave {:?}: {}",
                run.code,
                run.stderr.trim()
            );
        }
        if run.code == Some(3) {
            t.detected += 1;
        } else if !in_stub {
            failures.push(format!(
                "{what}: verify did not detect it:\n{}",
                run.describe()
            ));
        }
        if in_stub {
            let run = w.run_stub_on(&damaged, &["-q", "verify"]);
            if run.code == Some(3) && run.stderr.contains("program part (stub) was modified") {
                t.detected_by_pristine_stub += 1;
            } else {
                failures.push(format!(
                    "{what}: the pristine stub did not detect it:\n{}",
                    run.describe()
                ));
            }
        }

        if n % extract_every == 0 {
            let target = w.join("extract-target");
            let run = run_damaged(
                &w,
                &damaged,
                &["-q", "extract", "--target", target.to_str().unwrap()],
            );
            t.extracts += 1;
            t.crashes += u64::from(run.code.is_none());
            t.hangs += u64::from(hung(&run));
            t.extracts_refused += u64::from(run.code == Some(3));
            // A flipped frame that holds no file content (an image layer) is not read by
            // extract, which then succeeds; anything else it reads is checked first.
            let must_refuse = !matches!(region, "stub" | "frames");
            if (must_refuse && run.code != Some(3))
                || (region == "frames" && !matches!(run.code, Some(0 | 3)))
            {
                failures.push(format!(
                    "{what}: extract did not refuse:\n{}",
                    run.describe()
                ));
            }
            let (wrong, bytes) = wrong_final_paths(&reference, &target);
            t.bytes_lost += bytes;
            if !wrong.is_empty() {
                failures.push(format!(
                    "{what}: extract left wrong final paths {wrong:?}:\n{}",
                    run.describe()
                ));
            }
            if run.code == Some(0) {
                // A damaged program that still extracts must extract everything right.
                compare_trees(&reference, &target).unwrap_or_else(|e| {
                    failures.push(format!("{what}: extract succeeded but differs: {e:#}"))
                });
            }
            if target.exists() {
                place_remove(&target);
            }
        }

        if n % install_every == install_every / 2 {
            install_flipped(
                &w,
                &damaged,
                &pristine,
                &reference,
                (&what, region),
                t,
                &mut failures,
            );
        }
        flip_byte(&damaged, offset);
    }
    let elapsed = start.elapsed();
    assert_eq!(
        fs::read(&damaged).unwrap(),
        fs::read(&pristine).unwrap(),
        "every flip was undone"
    );

    let mut total = Tally::default();
    eprintln!(
        "\n{:<8} {:>6} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "region",
        "flips",
        "detected",
        "by-stub",
        "crashes",
        "hangs",
        "extracts",
        "refused",
        "installs",
        "refused",
        "bytes-lost",
        "bad-copies"
    );
    for (region, t) in &tallies {
        eprintln!(
            "{region:<8} {:>6} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            t.flips,
            t.detected,
            t.detected_by_pristine_stub,
            t.crashes,
            t.hangs,
            t.extracts,
            t.extracts_refused,
            t.installs,
            t.installs_refused,
            t.bytes_lost,
            t.copies_damaged
        );
        total.flips += t.flips;
        total.detected += t.detected;
        total.detected_by_pristine_stub += t.detected_by_pristine_stub;
        total.crashes += t.crashes;
        total.hangs += t.hangs;
        total.extracts += t.extracts;
        total.extracts_refused += t.extracts_refused;
        total.installs += t.installs;
        total.installs_refused += t.installs_refused;
        total.bytes_lost += t.bytes_lost;
        total.copies_damaged += t.copies_damaged;
    }
    eprintln!(
        "{:<8} {:>6} {:>9} {:>9} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}\n({flips} flips in {elapsed:?})",
        "total",
        total.flips,
        total.detected,
        total.detected_by_pristine_stub,
        total.crashes,
        total.hangs,
        total.extracts,
        total.extracts_refused,
        total.installs,
        total.installs_refused,
        total.bytes_lost,
        total.copies_damaged
    );
    assert!(
        failures.is_empty(),
        "{} failure(s) (seed {seed}):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(total.bytes_lost, 0);
    assert_eq!(total.flips, flips);
    let payload_flips = total.flips - tallies.get("stub").map_or(0, |t| t.flips);
    let payload_detected = total.detected - tallies.get("stub").map_or(0, |t| t.detected);
    assert_eq!(
        payload_detected, payload_flips,
        "every payload flip detected"
    );
}

/// Removes a tree that a damaged run may have left with read-only folders.
fn place_remove(path: &Path) {
    let _ = util::run({
        let mut c = std::process::Command::new("chmod");
        c.args(["-R", "u+rwx"]).arg(path);
        c
    });
    fs::remove_dir_all(path).unwrap();
}

/// `install --root` with the damaged file: damage in what install reads (header, meta,
/// index, trailer) must be refused with exit 3; whatever happens, every payload file at its
/// final path equals the source. Whatever ran is undone with the pristine installer's
/// `uninstall`.
///
/// Open install bug (stub/src/install, not fixed here): install does not verify the stub or
/// the frames it does not extract (image layers) before it copies the installer to
/// `var/lib/airlock/` and starts the registry from that copy, so such damage is persisted.
/// Counted as `copies_damaged`, not asserted, until install verifies first.
fn install_flipped(
    w: &Workdir,
    damaged: &Path,
    pristine: &Path,
    reference: &Path,
    (what, region): (&str, &str),
    t: &mut Tally,
    failures: &mut Vec<String>,
) {
    let root = w.join("install-root");
    fs::create_dir_all(&root).unwrap();
    let addr = util::free_addr();
    let root_s = root.to_str().unwrap();
    let run = run_damaged(
        w,
        damaged,
        &[
            "-q", "install", "--root", root_s, "--listen", &addr, "--yes",
        ],
    );
    t.installs += 1;
    t.crashes += u64::from(run.code.is_none());
    t.hangs += u64::from(hung(&run));
    t.installs_refused += u64::from(run.code == Some(3));
    let must_refuse = !matches!(region, "stub" | "frames");
    if (must_refuse && run.code != Some(3))
        || (region == "frames" && !matches!(run.code, Some(0 | 3)))
    {
        failures.push(format!(
            "{what}: install did not refuse:\n{}",
            run.describe()
        ));
    }
    // Files of the payload at their final paths: each equal to the source, or absent.
    let laid_out: Vec<String> = util::tree(&root)
        .into_iter()
        .filter(|p| reference.join(p).symlink_metadata().is_ok())
        .collect();
    for rel in &laid_out {
        let (got, want) = (root.join(rel), reference.join(rel));
        let gm = fs::symlink_metadata(&got).unwrap();
        if gm.is_file() && fs::read(&got).unwrap() != fs::read(&want).unwrap() {
            t.bytes_lost += gm.len();
            failures.push(format!("{what}: install left a wrong {rel}"));
        }
    }
    let copy = root.join("var/lib/airlock/sweep-1.0.run");
    if copy.exists() && fs::read(&copy).unwrap() != fs::read(pristine).unwrap() {
        t.copies_damaged += 1;
        eprintln!(
            "{what}: install exited {:?} and persisted the damaged installer",
            run.code
        );
    }
    w.run_installer(pristine, &["-q", "uninstall", "--root", root_s]);
    // A crashed install may have started a registry it never recorded: stop it (by pid).
    for pid in processes_mentioning(&root) {
        eprintln!("{what}: a process of the install outlived uninstall: {pid}, killing it");
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    place_remove(&root);
}

/// Pids of live processes whose command line mentions `path`.
fn processes_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.to_str().unwrap().as_bytes();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let zombie = fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        });
        if !zombie && cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_hundred_random_truncations_each_exit_3_with_a_clear_message() {
    let seed = sweep_seed();
    let cuts = setting("AIRLOCK_SWEEP_CUTS", 100);
    eprintln!("truncation sweep: AIRLOCK_SWEEP_SEED={seed} AIRLOCK_SWEEP_CUTS={cuts}");
    let b = build();
    let regions = Regions::of(&b.installer);
    // The program part (a first stage, its padding, then the stub, SPEC.md "First stage")
    // ends where the stub ends: the payload starts at the next multiple of 4096.
    let stub_len = fs::metadata(util::stub_bin()).unwrap().len();
    let elf_end = b.payload_offset - (b.payload_offset - stub_len) % 4096;
    assert!(elf_end <= b.payload_offset && b.payload_offset - elf_end < 4096);
    // With a first stage, a file cut at the program's end still knows its whole length.
    let first_stage = b.payload_offset - stub_len >= 4096;
    let mut rng = FixtureRng::new(seed);
    let mut failures = Vec::new();
    let mut times = Vec::new();
    let mut by_region: BTreeMap<&str, u64> = BTreeMap::new();
    for n in 0..cuts {
        let (region, cut) = regions.pick(&mut rng);
        *by_region.entry(region).or_default() += 1;
        let path = b.w.join(format!("cut-{cut}.run"));
        truncated_copy(&b.installer, &path, cut);
        // A file cut inside its program may not run at all (ENOEXEC, or a crash before main):
        // the intact stub reads it through AIRLOCK_INSTALLER, as a field engineer would be
        // told to. A file that still holds its whole program runs itself.
        let via_stub = cut < elf_end;
        let mut commands: Vec<&[&str]> = vec![&["info"], &["verify"]];
        if n % 10 == 0 {
            commands.push(&["extract", "--target", "out"]);
        }
        for args in commands {
            let run = if via_stub {
                b.w.run_stub_on(&path, args)
            } else {
                b.w.run_installer(&path, args)
            };
            times.push(run.elapsed);
            let mut wrong = Vec::new();
            if run.code != Some(3) {
                wrong.push("exit code is not 3".to_owned());
            }
            // Cut exactly at the program's end, the file looks stripped: also a clear cause.
            let says = if cut == elf_end && !first_stage {
                "stripped"
            } else {
                "truncated"
            };
            if !run.stderr.contains(says) {
                wrong.push(format!("stderr does not say {says:?}"));
            }
            if cut >= b.payload_offset + 64 && !contains_number(&run.stderr, b.file_len - cut) {
                wrong.push(format!(
                    "stderr does not name the {} missing bytes",
                    b.file_len - cut
                ));
            }
            if b.w.join("out").exists() {
                wrong.push(format!("extract left {:?}", names_in(&b.w.join("out"))));
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "cut #{n} at {cut} of {} bytes ({region}, seed {seed}): {}\n{}",
                    b.file_len,
                    wrong.join("; "),
                    run.describe()
                ));
            }
        }
        fs::remove_file(&path).unwrap();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: usize| ms(times[(times.len() * p / 100).min(times.len() - 1)]);
    eprintln!(
        "{cuts} cuts {by_region:?}, {} runs: median {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (wall time incl. fork/exec; the 50 ms target is measured by bench/truncation.sh)",
        times.len(),
        pct(50),
        pct(99),
        ms(*times.last().unwrap())
    );
    assert!(
        failures.is_empty(),
        "{} of the runs went wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
