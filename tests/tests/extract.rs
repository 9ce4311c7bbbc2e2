//! `extract`: what comes out equals what went in (bytes, modes, symlinks, hardlinks), at the
//! spec's `dest`, and only what was named.

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use airlock_fixtures::{compare_trees, paths, walk_tree, TreeSpec};
use util::{names_in, u64_of, Workdir};

const ROOT_SPEC: &str = "name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n";

#[test]
fn small_and_full_trees_round_trip_through_extract() {
    let w = Workdir::new();
    let small = TreeSpec::small(1).write(&w.join("src/small")).unwrap();
    let full = TreeSpec::full(2).write(&w.join("src/full")).unwrap();
    assert!(
        full.bytes > 36 << 20,
        "the full tree is the large one: {full:?}"
    );
    w.write_spec(ROOT_SPEC);
    let installer = w.build("demo.run");

    w.run_installer(&installer, &["-q", "extract", "--target", "out"])
        .success();

    compare_trees(&w.join("src"), &w.join("out"))
        .unwrap_or_else(|e| panic!("extracted tree differs: {e:#}"));
    // Belt and braces on the parts compare_trees covers, so a regression names itself.
    let out = w.join("out");
    let ino = |p: &str| fs::metadata(out.join("full").join(p)).unwrap().ino();
    assert_eq!(
        ino(paths::HARDLINK_A),
        ino(paths::HARDLINK_B),
        "hardlink pair is one inode"
    );
    assert_eq!(
        fs::read_link(out.join("small").join(paths::LINK_DANGLING)).unwrap(),
        Path::new("../no/such/file"),
        "dangling symlink kept verbatim"
    );
    assert_eq!(
        fs::symlink_metadata(out.join("small").join(paths::PRIVATE_FILE))
            .unwrap()
            .mode()
            & 0o7777,
        0o600
    );
    assert_eq!(
        names_in(&w.join("out")),
        ["full", "small"],
        "nothing but the tree, no staging left"
    );

    // The counts info reports are what the trees hold.
    let info = w
        .run_installer(&installer, &["info", "--json"])
        .success()
        .json();
    let files = (small.files + full.files - small.hardlinks - full.hardlinks) as u64;
    assert_eq!(u64_of(&info, "files"), files, "{info}");
    assert_eq!(
        u64_of(&info, "hardlinks"),
        (small.hardlinks + full.hardlinks) as u64,
        "{info}"
    );
    assert_eq!(
        u64_of(&info, "dirs"),
        (small.dirs + full.dirs + 2) as u64,
        "{info}"
    );
    assert_eq!(
        u64_of(&info, "symlinks"),
        (small.symlinks + full.symlinks) as u64,
        "{info}"
    );
    assert_eq!(
        u64_of(&info, "total_size"),
        small.bytes + full.bytes - hardlinked_bytes(&w.join("src")),
        "{info}"
    );
}

/// Bytes of the extra names of hardlinked files (a hardlink entry has no size of its own).
fn hardlinked_bytes(root: &Path) -> u64 {
    walk_tree(root)
        .unwrap()
        .iter()
        .filter(|e| e.hardlink_leader.as_ref().is_some_and(|l| *l != e.rel))
        .map(|e| e.size)
        .sum()
}

#[test]
fn files_land_under_the_spec_dest() {
    let w = Workdir::new();
    TreeSpec::small(3).write(&w.join("src")).unwrap();
    w.write_spec("name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /opt/app\n");
    let installer = w.build("demo.run");

    w.run_installer(&installer, &["-q", "extract", "--target", "out"])
        .success();

    assert_eq!(w.names_in("out"), ["opt"]);
    assert_eq!(w.names_in("out/opt"), ["app"]);
    compare_trees(&w.join("src"), &w.join("out/opt/app"))
        .unwrap_or_else(|e| panic!("extracted tree differs: {e:#}"));
}

#[test]
fn named_paths_extract_only_those_entries_and_their_parents() {
    let w = Workdir::new();
    TreeSpec::small(4).write(&w.join("src")).unwrap();
    w.write_spec("name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /opt/app\n");
    let installer = w.build("demo.run");

    let file = format!("opt/app/{}", paths::EXECUTABLE);
    let dir = "opt/app/links";
    w.run_installer(
        &installer,
        &["-q", "extract", "--target", "sel", &file, dir],
    )
    .success();

    // Expected: the file, the folder's whole subtree, and the parents of both.
    let mut expected: BTreeSet<PathBuf> = BTreeSet::new();
    for p in ["opt", "opt/app", "opt/app/modes", &file, dir] {
        expected.insert(PathBuf::from(p));
    }
    for e in walk_tree(&w.join("src/links")).unwrap() {
        expected.insert(Path::new(dir).join(&e.rel));
    }
    let got: BTreeSet<PathBuf> = walk_tree(&w.join("sel"))
        .unwrap()
        .into_iter()
        .map(|e| e.rel)
        .collect();
    assert_eq!(got, expected);

    // And what came out is right.
    assert_eq!(
        fs::read(w.join("sel").join(&file)).unwrap(),
        fs::read(w.join("src").join(paths::EXECUTABLE)).unwrap()
    );
    assert_eq!(
        fs::metadata(w.join("sel").join(&file)).unwrap().mode() & 0o7777,
        0o755
    );
    compare_trees(&w.join("src/links"), &w.join("sel").join(dir))
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn extract_of_a_path_not_in_the_installer_fails_and_writes_nothing() {
    let w = Workdir::new();
    TreeSpec::small(5).write(&w.join("src")).unwrap();
    w.write_spec(ROOT_SPEC);
    let installer = w.build("demo.run");
    fs::create_dir(w.join("out")).unwrap();

    let run = w
        .run_installer(
            &installer,
            &["extract", "--target", "out", paths::README, "no/such/entry"],
        )
        .expect_code(1);

    run.stderr_has("no/such/entry");
    assert!(
        w.names_in("out").is_empty(),
        "target changed: {:?}",
        w.names_in("out")
    );
}

#[test]
fn extract_files_get_the_build_mtime() {
    let w = Workdir::new();
    TreeSpec::small(6).write(&w.join("src")).unwrap();
    w.write_spec(ROOT_SPEC);
    let installer = w.build("demo.run");
    let info = w
        .run_installer(&installer, &["info", "--json"])
        .success()
        .json();

    w.run_installer(&installer, &["-q", "extract", "--target", "out"])
        .success();

    let mtime = fs::metadata(w.join("out").join(paths::DEEP_FILE))
        .unwrap()
        .mtime() as u64;
    assert_eq!(mtime, u64_of(&info, "mtime"));
}
