//! Damaged installers: a flipped byte in each part of the payload, and copies cut short.
//! Every case must end with exit code 3 and a message that says what is wrong.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_fixtures::seeded_bytes;
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
