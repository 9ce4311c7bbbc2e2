//! Split installers (issue 15): `build --split`, `split`, `join`, every command run from a
//! split installer (a registry blob that spans a part boundary pulled by skopeo), each part
//! removed, cut, swapped, damaged and replaced by a foreign one in turn, `copy --to` onto a
//! real FAT32 filesystem (dosfstools + fusefat), and an installer over 4 GiB split for FAT32.

mod util;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_fixtures::images::{write_oci_layout, BuiltImage, ImageContent};
use airlock_fixtures::seeded_bytes;
use sha2::Digest as _;
use util::oci::ServedRegistry;
use util::{have_command, is_root, prerequisite, run, sha256sum, Workdir};

/// Parts of this size: a multiple of 4096 just above the ~11 MB stub.
const PART: u64 = 12 << 20;

const SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\nimages:\n  - ref: example.hub/team/app:1.0\n    from: oci:images/layout:1.0\n";

struct Built {
    w: Workdir,
    whole: PathBuf,
    app: BuiltImage,
}

/// An installer of about 40 MB: 30 MB of random file data and one image with a 100 KiB
/// incompressible layer, built whole (`whole.run`).
fn build(seed: u64) -> Built {
    let w = Workdir::new();
    w.write_file("src/data/big.bin", seeded_bytes(seed, 30 << 20));
    w.write_file("src/notes.txt", "release notes\n".repeat(100));
    let built = write_oci_layout(
        &w.join("images/layout"),
        &[(
            "1.0",
            ImageContent {
                message: "hello from a split installer".to_owned(),
                extra_layer_seed: Some(seed),
            },
            false,
        )],
    )
    .expect("write the OCI layout");
    w.write_spec(SPEC);
    let whole = w.build("whole.run");
    Built {
        w,
        whole,
        app: built[0].clone(),
    }
}

fn part(first: &Path, n: usize) -> PathBuf {
    if n == 1 {
        first.to_owned()
    } else {
        PathBuf::from(format!("{}.{n:03}", first.display()))
    }
}

/// The parts of `first`, in order.
fn parts_of(first: &Path) -> Vec<PathBuf> {
    (1..)
        .map(|n| part(first, n))
        .take_while(|p| p.exists())
        .collect()
}

/// The sha256 of the parts joined, streamed.
fn sha256_of_parts(parts: &[PathBuf]) -> String {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in parts {
        let mut f = fs::File::open(p).unwrap();
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Where the stored bytes of the image's last layer (gzip, stored verbatim) start in
/// `file`, and their length.
fn layer_offset(w: &Workdir, file: &Path, app: &BuiltImage) -> (u64, u64) {
    let layer = app.layers.last().expect("a layer");
    let hex = layer.digest.strip_prefix("sha256:").unwrap();
    let blob = fs::read(w.join("images/layout/blobs/sha256").join(hex)).unwrap();
    let bytes = fs::read(file).unwrap();
    let at = bytes
        .windows(64)
        .position(|win| win == &blob[..64])
        .expect("the layer is stored verbatim");
    (at as u64, blob.len() as u64)
}

#[test]
fn split_build_parts_cat_to_the_unsplit_build_and_join_gives_it_back() {
    let b = build(1);
    let w = &b.w;
    w.airlock(&[
        "-q",
        "build",
        "-f",
        "airlock.yaml",
        "-o",
        "edge.run",
        "--split",
        "12M",
    ])
    .success();
    let parts = parts_of(&w.join("edge.run"));
    assert_eq!(parts.len(), 4, "{parts:?}");
    for p in &parts {
        assert!(
            fs::metadata(p).unwrap().len() <= PART,
            "{} is too big",
            p.display()
        );
    }
    assert_eq!(
        sha256_of_parts(&parts),
        sha256sum(&b.whole),
        "cat of the parts differs"
    );
    // `airlock split` of the whole file writes the same parts.
    fs::copy(&b.whole, w.join("again.run")).unwrap();
    w.airlock(&["-q", "split", "again.run", "--size", "12M"])
        .success();
    for (n, p) in parts.iter().enumerate() {
        assert_eq!(sha256sum(&part(&w.join("again.run"), n + 1)), sha256sum(p));
    }
    w.airlock(&["-q", "join", "edge.run", "-o", "joined.run"])
        .success();
    assert_eq!(sha256sum(&w.join("joined.run")), sha256sum(&b.whole));
    // A smaller re-split leaves no stale part behind; an unsplit build removes them all.
    w.airlock(&["-q", "join", "again.run", "-o", "again.run"])
        .success();
    assert_eq!(
        parts_of(&w.join("again.run")).len(),
        1,
        "join in place leaves no part"
    );
    assert_eq!(sha256sum(&w.join("again.run")), sha256sum(&b.whole));
    w.airlock(&["-q", "split", "again.run", "--size", "12M"])
        .success();
    w.airlock(&["-q", "join", "again.run", "-o", "again.run"])
        .success();
    w.airlock(&["-q", "split", "again.run", "--size", "20M"])
        .success();
    assert_eq!(parts_of(&w.join("again.run")).len(), 3);
    w.airlock(&["-q", "build", "-f", "airlock.yaml", "-o", "edge.run"])
        .success();
    assert_eq!(parts_of(&w.join("edge.run")).len(), 1);
    // A part size that cannot hold the program is refused before anything is written.
    let r = w.airlock(&[
        "build",
        "-f",
        "airlock.yaml",
        "-o",
        "tiny.run",
        "--split",
        "1M",
    ]);
    let r = r.expect_code(1);
    r.stderr_has("too small");
    assert!(!w.join("tiny.run").exists());
}

#[test]
fn every_command_works_from_a_split_installer_in_another_folder() {
    let b = build(2);
    let w = &b.w;
    // Cut so that the image layer spans the boundary between the first two parts.
    let (at, len) = layer_offset(w, &b.whole, &b.app);
    let size = (at + len / 2) / 4096 * 4096;
    assert!(
        size > at && size < at + len,
        "layer at {at}+{len}, part size {size}"
    );
    fs::create_dir(w.join("stick")).unwrap();
    fs::copy(&b.whole, w.join("stick/edge.run")).unwrap();
    w.airlock(&["-q", "split", "stick/edge.run", "--size", &size.to_string()])
        .success();
    let first = w.join("stick/edge.run");
    assert!(parts_of(&first).len() >= 2);
    w.run_installer(&first, &["info"]).success();
    w.run_installer(&first, &["verify"]).success();
    w.run_installer(&first, &["extract", "--target", "out"])
        .success();
    assert_eq!(
        sha256sum(&w.join("out/data/big.bin")),
        sha256sum(&w.join("src/data/big.bin"))
    );
    pull_spanning_layer(w, &first, &b.app);
    // install's persistent copy is one whole file, identical to the unsplit build.
    let root = w.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    let r = w
        .run_installer(
            &first,
            &[
                "install",
                "--root",
                root.to_str().unwrap(),
                "--yes",
                "--listen",
                &util::free_addr(),
            ],
        )
        .success();
    let copy = root.join("var/lib/airlock/demo-1.0.run");
    assert!(copy.is_file(), "no persistent copy:\n{}", r.describe());
    assert_eq!(sha256sum(&copy), sha256sum(&b.whole));
    w.run_installer(
        &copy,
        &["-q", "uninstall", "--root", root.to_str().unwrap()],
    )
    .success();
}

/// skopeo copies the image out of `installer`'s registry; its layer's digest is checked by
/// skopeo and again here.
fn pull_spanning_layer(w: &Workdir, installer: &Path, app: &BuiltImage) {
    if !prerequisite(
        have_command("skopeo"),
        "split registry test",
        "apt-get install skopeo",
    ) {
        return;
    }
    let reg = ServedRegistry::start(installer);
    let dest = w.join(format!("pulled-{}", reg.addr.replace(':', "_")));
    run({
        let mut c = Command::new("skopeo");
        c.args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/example.hub/team/app:1.0", reg.addr))
            .arg(format!("dir:{}", dest.display()));
        c
    })
    .success();
    let layer = app.layers.last().unwrap();
    let hex = layer.digest.strip_prefix("sha256:").unwrap();
    assert_eq!(sha256sum(&dest.join(hex)), layer.digest);
}

/// Runs `info` and `extract` on the split installer `first` and expects exit 3 with
/// `needle`, and an empty target.
fn expect_named(w: &Workdir, first: &Path, needle: &str, case: &str) {
    for args in [&["info"][..], &["extract", "--target", "bad-out"][..]] {
        let r = w.run_installer(first, args).expect_code(3);
        assert!(
            r.stderr.contains(needle),
            "{case}: wanted {needle:?} in:\n{}",
            r.describe()
        );
    }
    assert!(
        !w.join("bad-out").exists() || fs::read_dir(w.join("bad-out")).unwrap().next().is_none(),
        "{case}: something was written"
    );
}

#[test]
fn a_missing_cut_swapped_damaged_or_foreign_part_is_named_and_nothing_is_written() {
    let b = build(3);
    let w = &b.w;
    let other = build(4);
    other
        .w
        .airlock(&["-q", "split", "whole.run", "--size", "12M"])
        .success();
    w.airlock(&[
        "-q",
        "build",
        "-f",
        "airlock.yaml",
        "-o",
        "edge.run",
        "--split",
        "12M",
    ])
    .success();
    let first = w.join("edge.run");
    let parts = parts_of(&first);
    let n = parts.len();
    let keep = w.join("keep");
    fs::create_dir(&keep).unwrap();
    for p in &parts {
        fs::copy(p, keep.join(p.file_name().unwrap())).unwrap();
    }
    let restore = || {
        for p in &parts {
            fs::copy(keep.join(p.file_name().unwrap()), p).unwrap();
        }
    };
    let name = |i: usize| {
        parts[i - 1]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    for i in 2..=n {
        fs::remove_file(&parts[i - 1]).unwrap();
        expect_named(w, &first, &format!("{} is missing", name(i)), "missing");
        restore();

        let len = fs::metadata(&parts[i - 1]).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&parts[i - 1])
            .unwrap()
            .set_len(len - 1000)
            .unwrap();
        expect_named(w, &first, &format!("{} is truncated", name(i)), "truncated");
        restore();

        // A part of another installer of the same shape. Its last part may differ in length
        // by a few bytes (the other's SBOM compresses to another size): then it is named
        // by its wrong length.
        let foreign = part(&other.whole, i);
        fs::copy(&foreign, &parts[i - 1]).unwrap();
        if fs::metadata(&foreign).unwrap().len() == len {
            expect_named(w, &first, "does not belong to this installer", "foreign");
        } else {
            assert_eq!(i, n, "only the last part may differ in length");
            expect_named(
                w,
                &first,
                &format!("{} is", name(i)),
                "foreign, other length",
            );
        }
        restore();
    }
    // Two equal-length parts swapped: the first of them is named.
    fs::copy(&parts[1], w.join("tmp")).unwrap();
    fs::copy(&parts[2], &parts[1]).unwrap();
    fs::copy(w.join("tmp"), &parts[2]).unwrap();
    expect_named(
        w,
        &first,
        &format!("{} does not belong", name(2)),
        "swapped",
    );
    restore();
    let good = w.join("good-out");
    w.run_installer(&first, &["extract", "--target", "good-out"])
        .success();
    // A flipped byte in the payload of each part (nine tenths in: past the program part
    // of the first; `extract` checks frames, not the stub): `verify` and `extract` exit 3.
    for i in 1..=n {
        let len = fs::metadata(&parts[i - 1]).unwrap().len();
        util::flip_byte(&parts[i - 1], len / 10 * 9);
        let r = w.run_installer(&first, &["verify"]);
        let r = r.expect_code(3);
        assert!(
            r.stderr.contains("damaged") || r.stderr.contains("does not belong"),
            "{}",
            r.describe()
        );
        // `extract` decodes only the frames of files: damage in an image's or the SBOM's
        // frame does not stop it, but no damaged byte may reach the target.
        let r = w.run_installer(&first, &["extract", "--target", "bad-out"]);
        match r.code {
            Some(3) => assert!(
                !w.join("bad-out").exists()
                    || fs::read_dir(w.join("bad-out")).unwrap().next().is_none(),
                "damaged part {i}: something was extracted"
            ),
            Some(0) => {
                assert_eq!(
                    tree_digests(&w.join("bad-out")),
                    tree_digests(&good),
                    "damaged part {i}: extracted files differ"
                );
                fs::remove_dir_all(w.join("bad-out")).unwrap();
            }
            _ => panic!("damaged part {i}: {}", r.describe()),
        }
        restore();
    }
    // An extra part left over from another split is named.
    fs::write(part(&first, n + 1), b"left over").unwrap();
    expect_named(
        w,
        &first,
        &format!("{}.{:03} is not part of this installer", "edge.run", n + 1),
        "extra",
    );
    fs::remove_file(part(&first, n + 1)).unwrap();
    w.run_installer(&first, &["verify"]).success();
}

#[test]
fn copy_to_a_folder_resumes_and_refuses_a_missing_part_of_the_source() {
    let b = build(5);
    let w = &b.w;
    fs::create_dir(w.join("usb")).unwrap();
    let r = w
        .run_installer(&b.whole, &["copy", "--to", "usb", "--split", "12M"])
        .success();
    assert!(r.stdout.contains("safe to eject"), "{}", r.describe());
    let copied = parts_of(&w.join("usb/whole.run"));
    assert_eq!(copied.len(), 4);
    assert_eq!(sha256_of_parts(&copied), sha256sum(&b.whole));
    // Interrupted: one part gone, one half-written under a temp name. The re-run writes one.
    fs::remove_file(&copied[2]).unwrap();
    fs::write(w.join("usb/.airlock-copy-half"), vec![0u8; 1000]).unwrap();
    let r = w
        .run_installer(&b.whole, &["copy", "--to", "usb", "--split", "12M"])
        .success();
    assert!(
        r.stdout.contains("(1 written, 3 already there)"),
        "{}",
        r.describe()
    );
    assert_eq!(sha256_of_parts(&copied), sha256sum(&b.whole));
    // `airlock copy` runs the stub on the file.
    fs::create_dir(w.join("usb2")).unwrap();
    w.airlock(&["copy", "whole.run", "--to", "usb2"]).success();
    assert_eq!(sha256sum(&w.join("usb2/whole.run")), sha256sum(&b.whole));
}

// ---- a real FAT32 filesystem ------------------------------------------------------------

/// A FAT32 image of `mib` MiB mounted with fusefat; unmounted when dropped.
struct FatStick {
    dir: PathBuf,
}

impl FatStick {
    fn mount(w: &Workdir, name: &str, mib: u64) -> FatStick {
        let img = w.join(format!("{name}.img"));
        fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
        run({
            let mut c = Command::new("mkfs.vfat");
            c.args(["-F", "32"]).arg(&img);
            c
        })
        .success();
        let dir = w.join(name);
        fs::create_dir(&dir).unwrap();
        run({
            let mut c = Command::new("fusefat");
            c.args(["-o", "rw+"]).arg(&img).arg(&dir);
            c
        })
        .success();
        FatStick { dir }
    }
}

impl Drop for FatStick {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.dir).status();
    }
}

fn fat_ready(test: &str) -> bool {
    prerequisite(is_root(), test, "needs root (FUSE mount)")
        && prerequisite(
            have_command("mkfs.vfat") && have_command("fusefat") && have_command("fusermount"),
            test,
            "apt-get install dosfstools fusefat",
        )
        && prerequisite(Path::new("/dev/fuse").exists(), test, "no /dev/fuse")
}

#[test]
fn copy_to_a_fat32_stick_splits_by_itself_and_the_stick_serves_verifies_and_extracts() {
    if !fat_ready("fat32 test") {
        return;
    }
    let b = build(6);
    let w = &b.w;
    let stick = FatStick::mount(w, "stick", 200);
    // An unsplit installer onto FAT: split by `copy` itself (the FAT part size is lowered so
    // that a 40 MB file needs it).
    let (at, len) = layer_offset(w, &b.whole, &b.app);
    let size = (at + len / 2) / 4096 * 4096;
    let r = w
        .airlock_env(
            &["copy", "whole.run", "--to", stick.dir.to_str().unwrap()],
            &[("AIRLOCK_FAT32_PART_SIZE", &size.to_string())],
        )
        .success();
    assert!(r.stdout.contains("FAT filesystem"), "{}", r.describe());
    assert!(r.stdout.contains("safe to eject"), "{}", r.describe());
    let first = stick.dir.join("whole.run");
    let parts = parts_of(&first);
    assert!(parts.len() >= 2, "copy did not split on FAT: {parts:?}");
    assert_eq!(sha256_of_parts(&parts), sha256sum(&b.whole));
    // From the stick: verify, extract byte-identical, registry serve (a layer across parts).
    w.run_stub_on(&first, &["verify"]).success();
    w.run_stub_on(&first, &["extract", "--target", "from-stick"])
        .success();
    assert_eq!(
        sha256sum(&w.join("from-stick/data/big.bin")),
        sha256sum(&w.join("src/data/big.bin"))
    );
    pull_spanning_layer(w, &first, &b.app);
    // An installer split with a small --split, copied as it is.
    w.airlock(&[
        "-q",
        "build",
        "-f",
        "airlock.yaml",
        "-o",
        "edge.run",
        "--split",
        "12M",
    ])
    .success();
    let sub = stick.dir.join("b");
    fs::create_dir(&sub).unwrap();
    w.run_installer(
        &w.join("edge.run"),
        &["copy", "--to", sub.to_str().unwrap()],
    )
    .success();
    assert_eq!(parts_of(&sub.join("edge.run")).len(), 4);
    w.run_stub_on(&sub.join("edge.run"), &["verify"]).success();
}

/// Over 4 GiB, mostly incompressible (stored raw, so the build is I/O bound): `--split
/// fat32` gives parts of at most 4 GiB - 1 whose `cat` is the unsplit build.
#[test]
fn an_installer_over_4_gib_splits_into_fat32_parts_that_cat_to_the_unsplit_build() {
    let w = Workdir::new();
    let data = w.join("src/data/big.bin");
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(fs::File::create(&data).unwrap());
        let chunk = seeded_bytes(9, 64 << 20);
        for i in 0..66u64 {
            // 66 x 64 MiB = 4.125 GiB; every chunk differs in its first bytes.
            f.write_all(&i.to_le_bytes()).unwrap();
            f.write_all(&chunk[8..]).unwrap();
        }
    }
    w.write_spec("name: big\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n");
    w.airlock(&[
        "-q",
        "build",
        "--no-cache",
        "--level",
        "1",
        "-f",
        "airlock.yaml",
        "-o",
        "whole.run",
    ])
    .success();
    let whole = sha256sum(&w.join("whole.run"));
    fs::remove_file(w.join("whole.run")).unwrap();
    w.airlock(&[
        "-q",
        "build",
        "--no-cache",
        "--level",
        "1",
        "-f",
        "airlock.yaml",
        "-o",
        "edge.run",
        "--split",
        "fat32",
    ])
    .success();
    fs::remove_file(&data).unwrap();
    let parts = parts_of(&w.join("edge.run"));
    assert_eq!(parts.len(), 2, "{parts:?}");
    for p in &parts {
        assert!(
            fs::metadata(p).unwrap().len() < 1 << 32,
            "{} is over 4 GiB - 1",
            p.display()
        );
    }
    assert_eq!(sha256_of_parts(&parts), whole);
    w.run_installer(&parts[0], &["info"]).success();
}

/// `(relative path, sha256)` of every file under `dir`, sorted.
fn tree_digests(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.is_file() {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, sha256sum(&p)));
            }
        }
    }
    out.sort();
    out
}
