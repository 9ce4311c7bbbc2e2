//! Signed installers end to end: `airlock keygen`, `build --sign`, `sign`, the stub's
//! `verify --key`, the trusted-keys policy, `signature export` checked by Debian's
//! `minisign`, and version 1 files.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_fixtures::seeded_bytes;
use sha2::{Digest, Sha256};
use util::{flip_byte, have_command, in_ci, prerequisite, run, tree, u64_of, Run, Workdir};

/// A work folder with a spec whose payload holds `data/one.bin` (random, `seed`) and a
/// small text file.
fn workdir(seed: u64) -> Workdir {
    let w = Workdir::new();
    w.write_file("src/data/one.bin", seeded_bytes(seed, 300_000));
    w.write_file("src/etc/motd", "hello\n".repeat(50));
    w.write_spec("name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n");
    w
}

/// `airlock keygen --no-password -o NAME`; returns the key id.
fn keygen(w: &Workdir, name: &str) -> String {
    let run = w
        .airlock(&["keygen", "--no-password", "-o", name])
        .success();
    key_id_in(&run)
}

fn key_id_in(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap_or_else(|| panic!("no key id printed:\n{}", run.describe()))
        .to_owned()
}

/// Length of the signed part and the whole file, as `info --json` reports them.
fn lengths(w: &Workdir, installer: &Path) -> (u64, u64) {
    let info = w
        .run_installer(installer, &["info", "--json"])
        .success()
        .json();
    (u64_of(&info, "signed_len"), u64_of(&info, "file_len"))
}

#[test]
fn a_signed_build_verifies_with_airlock_and_with_minisign() {
    let w = workdir(1);
    let keygen = w
        .airlock_env(
            &["keygen", "-o", "release"],
            &[("AIRLOCK_KEY_PASSWORD", "s3cret")],
        )
        .success();
    let id = key_id_in(&keygen);
    let mode = fs::metadata(w.join("release.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    w.airlock_env(
        &[
            "-q",
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "edge.run",
            "--sign",
            "release.key",
        ],
        &[("AIRLOCK_KEY_PASSWORD", "s3cret")],
    )
    .success();
    let edge = w.join("edge.run");
    let run = w
        .run_installer(&edge, &["-q", "verify", "--key", "release.pub"])
        .success();
    assert!(
        run.stdout.contains(&format!("good signature by key {id}")),
        "{}",
        run.describe()
    );
    let info = w.run_installer(&edge, &["info"]).success();
    assert!(
        info.stdout.contains(&format!("signer:    key {id}")),
        "{}",
        info.describe()
    );
    assert!(
        info.stdout.contains("installer:demo 1.0"),
        "{}",
        info.describe()
    );

    w.run_installer(&edge, &["signature", "export", "-o", "exported"])
        .success();
    let (signed_len, _) = lengths(&w, &edge);
    let message = fs::read(w.join("exported/message")).unwrap();
    assert_eq!(message.len() as u64, signed_len);
    assert_eq!(message[..], fs::read(&edge).unwrap()[..signed_len as usize]);
    if !prerequisite(
        have_command("minisign"),
        "minisign",
        "Debian's minisign is not installed",
    ) {
        return;
    }
    let mut cmd = Command::new("minisign");
    cmd.arg("-V")
        .arg("-p")
        .arg(w.join("release.pub"))
        .arg("-m")
        .arg(w.join("exported/message"));
    cmd.arg("-x").arg(w.join(format!("exported/{id}.minisig")));
    let check = run_cmd(cmd);
    assert_eq!(
        check.code,
        Some(0),
        "minisign rejected the signature:\n{}",
        check.describe()
    );
    assert!(
        check
            .stdout
            .contains("Signature and comment signature verified"),
        "{}",
        check.describe()
    );
    // And minisign sees a changed message.
    flip_byte(&w.join("exported/message"), 5000);
    let mut cmd = Command::new("minisign");
    cmd.arg("-V")
        .arg("-p")
        .arg(w.join("release.pub"))
        .arg("-m")
        .arg(w.join("exported/message"));
    cmd.arg("-x").arg(w.join(format!("exported/{id}.minisig")));
    assert_ne!(run_cmd(cmd).code, Some(0));
}

#[test]
fn a_flipped_byte_anywhere_in_a_signed_file_fails_verify_key() {
    let w = workdir(2);
    keygen(&w, "k");
    w.airlock(&[
        "-q",
        "build",
        "-f",
        "airlock.yaml",
        "-o",
        "edge.run",
        "--sign",
        "k.key",
    ])
    .success();
    let edge = w.join("edge.run");
    let (signed_len, file_len) = lengths(&w, &edge);
    let payload_offset = u64_of(&w.inspect_json(&edge), "payload_offset");
    let positions = [
        ("stub", 100),
        ("header", payload_offset + 8),
        ("frame", payload_offset + 64 + 1000),
        ("index", signed_len - 256 - 5),
        ("trailer", signed_len - 100),
        ("signature record", signed_len + 40),
        ("signature line", signed_len + 120),
        ("signature footer", file_len - 50),
        ("end magic", file_len - 1),
    ];
    for (what, at) in positions {
        let copy = w.join(format!("flipped-{at}.run"));
        fs::copy(&edge, &copy).unwrap();
        flip_byte(&copy, at);
        let run = w.run_stub_on(&copy, &["-q", "verify", "--key", "k.pub"]);
        assert_eq!(
            run.code,
            Some(3),
            "flip in the {what} at {at}:\n{}",
            run.describe()
        );
    }
    w.run_installer(&edge, &["-q", "verify", "--key", "k.pub"])
        .success();
}

#[test]
fn sign_in_place_keeps_every_other_byte_and_allows_two_signatures() {
    let w = workdir(3);
    let (a, b) = (keygen(&w, "a"), keygen(&w, "b"));
    let edge = w.build("edge.run");
    let original = fs::read(&edge).unwrap();
    let run = w.airlock(&["sign", "edge.run", "--key", "a.key"]).success();
    assert!(run.stdout.contains(&a), "{}", run.describe());
    let once = fs::read(&edge).unwrap();
    assert_eq!(
        once[..original.len()],
        original[..],
        "signing changed the installer's bytes"
    );
    w.airlock(&["sign", "edge.run", "--key", "b.key"]).success();
    let twice = fs::read(&edge).unwrap();
    assert_eq!(twice[..original.len()], original[..]);
    assert_eq!(lengths(&w, &edge).0, original.len() as u64);
    for key in ["a.pub", "b.pub"] {
        w.run_installer(&edge, &["-q", "verify", "--key", key])
            .success();
    }
    let info = w.run_installer(&edge, &["info", "--json"]).success().json();
    let ids: Vec<&str> = info["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    // Re-signing with a key replaces its signature: still two.
    w.airlock(&["sign", "edge.run", "--key", "a.key"]).success();
    let info = w.run_installer(&edge, &["info", "--json"]).success().json();
    assert_eq!(info["signatures"].as_array().unwrap().len(), 2);
    // `--key-dir` accepts either.
    fs::create_dir(w.join("keys")).unwrap();
    fs::copy(w.join("b.pub"), w.join("keys/b.pub")).unwrap();
    w.run_installer(&edge, &["-q", "verify", "--key-dir", "keys"])
        .success();
}

#[test]
fn trusted_keys_make_install_and_extract_refuse_unsigned_and_unknown_signers() {
    let w = workdir(4);
    let (trusted, other) = (keygen(&w, "trusted"), keygen(&w, "other"));
    let unsigned = w.build("unsigned.run");
    let by_other = w.join("other.run");
    fs::copy(&unsigned, &by_other).unwrap();
    w.airlock(&["-q", "sign", "other.run", "--key", "other.key"])
        .success();
    let good = w.join("good.run");
    fs::copy(&unsigned, &good).unwrap();
    w.airlock(&["-q", "sign", "good.run", "--key", "trusted.key"])
        .success();

    let root = w.join("root");
    fs::create_dir_all(root.join("etc/airlock/trusted-keys")).unwrap();
    fs::copy(
        w.join("trusted.pub"),
        root.join("etc/airlock/trusted-keys/release.pub"),
    )
    .unwrap();
    let before = tree(&root);
    for (file, expect) in [(&unsigned, "not signed"), (&by_other, other.as_str())] {
        let run = w
            .run_installer(file, &["install", "--root", "root", "--yes"])
            .expect_code(3);
        run.stderr_has(expect);
        run.stderr_has(&trusted);
        assert_eq!(tree(&root), before, "a refused install changed the root");
        let mut cmd = w.installer_command(file, &["extract", "--target", "out"]);
        cmd.env(
            "AIRLOCK_TRUSTED_KEYS",
            root.join("etc/airlock/trusted-keys"),
        );
        let run = run_cmd(cmd);
        assert_eq!(run.code, Some(3), "{}", run.describe());
        assert!(!w.join("out").exists(), "a refused extract wrote files");
    }
    let mut cmd = w.installer_command(&good, &["-q", "extract", "--target", "out"]);
    cmd.env(
        "AIRLOCK_TRUSTED_KEYS",
        root.join("etc/airlock/trusted-keys"),
    );
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(
        fs::read_to_string(w.join("out/etc/motd")).unwrap(),
        "hello\n".repeat(50)
    );
    // install --key with a key that did not sign: refused, nothing changed.
    let run = w
        .run_installer(
            &good,
            &["install", "--root", "root2", "--yes", "--key", "other.pub"],
        )
        .expect_code(3);
    run.stderr_has(&other);
    assert!(!w.join("root2").exists());
}

fn run_cmd(cmd: Command) -> Run {
    run(cmd)
}

#[test]
fn bad_keys_passwords_and_foreign_signatures_are_clear_errors() {
    let w = workdir(5);
    w.airlock_env(
        &["-q", "keygen", "-o", "enc"],
        &[("AIRLOCK_KEY_PASSWORD", "right")],
    )
    .success();
    let run = w
        .airlock_env(
            &[
                "build",
                "-f",
                "airlock.yaml",
                "-o",
                "x.run",
                "--sign",
                "enc.key",
            ],
            &[("AIRLOCK_KEY_PASSWORD", "wrong")],
        )
        .expect_code(1);
    run.stderr_has("wrong password");
    assert!(
        !w.join("x.run").exists(),
        "a failed signing build wrote an installer"
    );
    let run = w
        .airlock(&[
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "x.run",
            "--sign",
            "enc.key",
        ])
        .expect_code(1);
    run.stderr_has("AIRLOCK_KEY_PASSWORD");
    let run = w
        .airlock(&[
            "build",
            "-f",
            "airlock.yaml",
            "-o",
            "x.run",
            "--sign",
            "enc.pub",
        ])
        .expect_code(1);
    run.stderr_has("this is a public key");

    keygen(&w, "k");
    let edge = w.build("edge.run");
    let pub_text = fs::read_to_string(w.join("k.pub")).unwrap();
    w.write_file("cut.pub", &pub_text[..pub_text.len() - 10]);
    let run = w
        .run_installer(&edge, &["verify", "--key", "cut.pub"])
        .expect_code(1);
    run.stderr_has("not a minisign public key");
    let run = w
        .run_installer(&edge, &["verify", "--key", "k.pub"])
        .expect_code(3);
    run.stderr_has("not signed");

    // A signature over another file: the same content as version 1.1 (a file of the same
    // size), signed, and its signature section grafted onto this installer.
    // The embedded SBOM (digests of random content) compresses to slightly different
    // sizes, so the first seed whose unsigned installer has this one's length is taken.
    let mut mine = fs::read(&edge).unwrap();
    let (w2, other) = (5..200)
        .find_map(|seed| {
            let w2 = workdir(seed);
            w2.write_spec("name: demo\nversion: \"1.1\"\nfiles:\n  - src: src/\n    dest: /\n");
            let other = w2.build("other.run");
            (fs::metadata(&other).unwrap().len() == mine.len() as u64).then_some((w2, other))
        })
        .expect("an installer of the same length among 195 seeds");
    fs::copy(w.join("k.key"), w2.join("k.key")).unwrap();
    w2.airlock(&["-q", "sign", "other.run", "--key", "k.key"])
        .success();
    let other_bytes = fs::read(&other).unwrap();
    assert_eq!(
        lengths(&w2, &other).0,
        mine.len() as u64,
        "same-sized fixtures"
    );
    assert_ne!(other_bytes[..mine.len()], mine[..]);
    mine.extend_from_slice(&other_bytes[mine.len()..]);
    let grafted = w.join("grafted.run");
    fs::write(&grafted, &mine).unwrap();
    util::chmod(&grafted, 0o755);
    let run = w
        .run_installer(&grafted, &["-q", "verify", "--key", "k.pub"])
        .expect_code(3);
    run.stderr_has("does not verify");
    let run = w.airlock(&["sign", "grafted.run", "--key", "k.key"]);
    // The grafted file is intact as an installer (only its signature is foreign): it may be
    // re-signed, which replaces the foreign signature.
    assert_eq!(run.code, Some(0), "{}", run.describe());
    w.run_installer(&grafted, &["-q", "verify", "--key", "k.pub"])
        .success();

    // Signing a damaged installer is refused.
    flip_byte(
        &edge,
        u64_of(&w.inspect_json(&edge), "payload_offset") + 64 + 10,
    );
    let run = w
        .airlock(&["sign", "edge.run", "--key", "k.key"])
        .expect_code(3);
    run.stderr_has("refusing to sign");
}

/// Rewrites a version 2 installer without signature section or SBOM as version 1: the
/// layout of every byte is the same, only the version fields and their checksums differ.
fn downgrade_to_v1(path: &Path, payload_offset: u64) {
    let mut b = fs::read(path).unwrap();
    let po = payload_offset as usize;
    b[po + 8..po + 12].copy_from_slice(&1u32.to_le_bytes());
    let sum: [u8; 32] = Sha256::digest(&b[po..po + 32]).into();
    b[po + 32..po + 64].copy_from_slice(&sum);
    let t = b.len() - 256;
    b[t + 8..t + 12].copy_from_slice(&1u32.to_le_bytes());
    let sum: [u8; 32] = Sha256::digest(&b[t..t + 216]).into();
    b[t + 216..t + 248].copy_from_slice(&sum);
    fs::write(path, b).unwrap();
}

#[test]
fn version_1_installers_still_verify_and_extract_and_are_not_signed() {
    let w = workdir(7);
    keygen(&w, "k");
    let edge = w.build("edge.run");
    let payload_offset = u64_of(&w.inspect_json(&edge), "payload_offset");
    downgrade_to_v1(&edge, payload_offset);
    let info = w.run_installer(&edge, &["info", "--json"]).success().json();
    assert_eq!(info["format_version"], 1);
    w.run_installer(&edge, &["-q", "verify", "--deep"])
        .success();
    w.run_installer(&edge, &["-q", "extract", "--target", "out"])
        .success();
    assert_eq!(
        fs::read_to_string(w.join("out/etc/motd")).unwrap(),
        "hello\n".repeat(50)
    );
    let run = w
        .airlock(&["sign", "edge.run", "--key", "k.key"])
        .expect_code(1);
    run.stderr_has("version 1");
    let _ = (in_ci, PathBuf::new);
}
