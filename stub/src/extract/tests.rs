use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use airlock_fixtures::{compare_trees, TreeSpec};

use super::*;
use crate::sys::{FixedSpace, FreeSpace, Statvfs};
use crate::testutil::{damage_frame, installer_from_tree, make_removable, sample_tree, MTIME};

/// Extracts `names` from the installer in `bytes` into `target` with real free space.
fn run(bytes: &[u8], target: &Path, names: &[&str]) -> Result<ExtractSummary> {
    run_with(bytes, target, names, &Statvfs)
}

fn run_with(
    bytes: &[u8],
    target: &Path,
    names: &[&str],
    space: &dyn SpaceProbe,
) -> Result<ExtractSummary> {
    let installer = Installer::open(bytes, None).unwrap();
    let payload = installer.load_index()?;
    let paths: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let bar = ProgressBar::hidden();
    extract(
        &installer,
        &payload,
        &ExtractOptions {
            target,
            paths: &paths,
            space,
            bar: &bar,
            release: &|_| {},
        },
    )
}

/// The sample tree, its installer, and a scratch folder for targets.
fn sample() -> (Vec<u8>, tempfile::TempDir, tempfile::TempDir) {
    let tree = sample_tree();
    let bytes = installer_from_tree(tree.path());
    (bytes, tree, tempfile::tempdir().unwrap())
}

/// Every name in `dir`, recursively, sorted; `dir` itself excluded.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        for child in fs::read_dir(root.join(rel)).unwrap() {
            let child = child.unwrap();
            let rel = rel.join(child.file_name());
            out.push(rel.display().to_string());
            if child.file_type().unwrap().is_dir() {
                walk(root, &rel, out);
            }
        }
    }
    walk(dir, Path::new(""), &mut out);
    out.sort();
    out
}

fn mtime(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().mtime() as u64
}

#[test]
fn full_extract_reproduces_the_fixture_tree() {
    let src = tempfile::tempdir().unwrap();
    TreeSpec::small(11).write(src.path()).unwrap();
    let bytes = installer_from_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("t");
    let summary = run(&bytes, &target, &[]).unwrap();
    compare_trees(src.path(), &target).unwrap();
    let installer = Installer::open(&bytes, None).unwrap();
    assert_eq!(summary.entries as u64, installer.trailer().entry_count);
    assert_eq!(summary.bytes, installer.meta().total_size);
    assert_eq!(
        summary.frames_decoded as u64,
        installer.meta().frame_count,
        "every frame decoded exactly once"
    );
    make_removable(src.path());
    make_removable(&target);
}

#[test]
fn full_extract_sets_content_modes_links_and_mtimes() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    run(&bytes, &target, &[]).unwrap();
    compare_trees(tree.path(), &target).unwrap();
    for rel in [
        "bin/tool",
        "big/data.bin",
        "etc/conf",
        "etc/copy",
        "etc/empty",
        "ro/inside.txt",
    ] {
        assert_eq!(
            fs::read(target.join(rel)).unwrap(),
            fs::read(tree.path().join(rel)).unwrap(),
            "{rel}"
        );
    }
    let mode = |rel: &str| fs::symlink_metadata(target.join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(mode("bin/tool"), 0o755);
    assert_eq!(mode("etc"), 0o750);
    assert_eq!(mode("etc/conf"), 0o600);
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/inside.txt"), 0o444);
    assert_eq!(
        fs::read_link(target.join("bin/link")).unwrap(),
        Path::new("tool")
    );
    let ino = |rel: &str| fs::metadata(target.join(rel)).unwrap().ino();
    assert_eq!(
        ino("bin/twin"),
        ino("bin/tool"),
        "hardlink shares the inode"
    );
    assert_ne!(
        ino("etc/conf"),
        ino("etc/copy"),
        "de-duplicated content is not a hardlink"
    );
    for rel in [
        "bin",
        "bin/tool",
        "deep/a/b/c",
        "deep",
        "ro",
        "big/data.bin",
    ] {
        assert_eq!(mtime(&target.join(rel)), MTIME, "{rel}");
    }
    assert!(!listing(&target).iter().any(|p| p.contains(STAGING_PREFIX)));
    make_removable(tree.path());
    make_removable(&target);
}

#[test]
fn named_paths_extract_their_subtrees_and_parents_only() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    let summary = run(&bytes, &target, &["etc", "deep/a/b/c/leaf.txt"]).unwrap();
    assert_eq!(
        listing(&target),
        [
            "deep",
            "deep/a",
            "deep/a/b",
            "deep/a/b/c",
            "deep/a/b/c/leaf.txt",
            "etc",
            "etc/conf",
            "etc/copy",
            "etc/empty"
        ]
    );
    assert_eq!(fs::read(target.join("etc/copy")).unwrap(), b"key = value\n");
    assert_eq!(
        summary.frames_decoded, 1,
        "only the frame with the small files is decoded"
    );
    make_removable(tree.path());
}

#[test]
fn a_name_not_in_the_payload_is_an_error_and_creates_nothing() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    let err = run(&bytes, &target, &["etc", "no/such"]).unwrap_err();
    assert!(
        matches!(&err, Error::NotInPayload { paths } if paths == &["no/such"]),
        "{err}"
    );
    assert!(!err.is_corrupt());
    assert!(!target.exists());
    make_removable(tree.path());
}

#[test]
fn a_damaged_frame_fails_naming_the_entry_and_leaves_the_target_untouched() {
    let (mut bytes, tree, out) = sample();
    damage_frame(&mut bytes, 0);
    let target = out.path().join("t");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"mine").unwrap();
    let err = run(&bytes, &target, &[]).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.starts_with(
            "failed to extract big/data.bin: installer is corrupt: frame 0 is damaged"
        ),
        "{chain}"
    );
    assert_eq!(
        listing(&target),
        ["keep"],
        "no extracted file and no staging folder"
    );
    make_removable(tree.path());
}

#[test]
fn a_damaged_frame_outside_the_selection_does_not_matter() {
    let (mut bytes, tree, out) = sample();
    damage_frame(&mut bytes, 0);
    let target = out.path().join("t");
    run(&bytes, &target, &["etc"]).unwrap();
    assert_eq!(fs::read(target.join("etc/conf")).unwrap(), b"key = value\n");
    make_removable(tree.path());
}

#[test]
fn too_little_space_is_refused_before_anything_is_written() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    fs::create_dir(&target).unwrap();
    let full = FixedSpace(FreeSpace {
        bytes: 1_000_000,
        inodes: Some(1_000_000),
    });
    let err = run_with(&bytes, &target, &[], &full).unwrap_err();
    // 5 MiB + 20 kB of files plus 17 entries * 4 KiB.
    assert_eq!(
        err.to_string(),
        format!(
            "not enough space in {}: need 5.3 MB, 1.0 MB available",
            target.display()
        )
    );
    assert!(listing(&target).is_empty());

    let few_inodes = FixedSpace(FreeSpace {
        bytes: u64::MAX,
        inodes: Some(3),
    });
    let err = run_with(&bytes, &target, &[], &few_inodes).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(": need 17 inodes, 3 inodes available"),
        "{err}"
    );
    assert!(listing(&target).is_empty());

    let new_target = out.path().join("new");
    run_with(&bytes, &new_target, &[], &full).unwrap_err();
    assert!(
        !new_target.exists(),
        "a target created for a refused extract is removed"
    );
    make_removable(tree.path());
}

#[test]
fn an_existing_symlink_where_a_folder_goes_is_refused_and_not_followed() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    let elsewhere = out.path().join("elsewhere");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("precious"), b"untouched").unwrap();
    symlink(&elsewhere, target.join("etc")).unwrap();
    let err = run(&bytes, &target, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to replace symlink {} with a folder",
            target.join("etc").display()
        )
    );
    assert_eq!(listing(&elsewhere), ["precious"]);
    assert_eq!(fs::read(elsewhere.join("precious")).unwrap(), b"untouched");
    assert_eq!(
        listing(&target),
        ["etc"],
        "nothing moved, no staging folder left"
    );
    make_removable(tree.path());
}

#[test]
fn extracting_again_replaces_changed_files_and_keeps_foreign_ones() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    run(&bytes, &target, &[]).unwrap();
    fs::write(target.join("etc/conf"), b"edited").unwrap();
    fs::remove_file(target.join("bin/link")).unwrap();
    fs::write(target.join("bin/link"), b"a file where a link was").unwrap();
    fs::write(target.join("etc/local"), b"not from the installer").unwrap();
    run(&bytes, &target, &[]).unwrap();
    assert_eq!(
        mtime(&target.join("etc")),
        MTIME,
        "merged folders get their mtime back"
    );
    assert_eq!(
        fs::read(target.join("etc/local")).unwrap(),
        b"not from the installer"
    );
    fs::remove_file(target.join("etc/local")).unwrap();
    compare_trees(tree.path(), &target).unwrap();
    assert_eq!(fs::read(target.join("etc/conf")).unwrap(), b"key = value\n");
    assert_eq!(
        fs::read_link(target.join("bin/link")).unwrap(),
        Path::new("tool")
    );
    make_removable(tree.path());
    make_removable(&target);
}

#[test]
fn stale_staging_folders_are_removed() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("t");
    let stale = target.join(format!("{STAGING_PREFIX}old"));
    fs::create_dir_all(stale.join("ro/deeper")).unwrap();
    fs::set_permissions(stale.join("ro"), Permissions::from_mode(0o500)).unwrap();
    run(&bytes, &target, &["etc/conf"]).unwrap();
    assert_eq!(listing(&target), ["etc", "etc/conf"]);
    make_removable(tree.path());
}

#[test]
fn a_target_whose_parent_is_missing_is_an_error() {
    let (bytes, tree, out) = sample();
    let target = out.path().join("missing/t");
    let err = run(&bytes, &target, &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to create the target folder"),
        "{err}"
    );
    assert!(!err.is_corrupt());
    make_removable(tree.path());
}

#[test]
fn a_staging_folder_locked_by_a_running_extract_is_left_alone() {
    let target = tempfile::tempdir().unwrap();
    let busy = target.path().join(format!("{STAGING_PREFIX}busy"));
    fs::create_dir(&busy).unwrap();
    let _held = crate::sys::try_lock_dir(&busy)
        .unwrap()
        .expect("first lock succeeds");
    assert!(
        crate::sys::try_lock_dir(&busy).unwrap().is_none(),
        "a second lock must fail"
    );
    let (bytes, _tree, _) = sample();
    run(&bytes, target.path(), &[]).unwrap();
    assert!(busy.exists(), "the busy staging folder was removed");
}

#[test]
fn a_full_disk_while_writing_names_the_target_and_the_entry() {
    let target = Path::new("/mnt/target");
    let staging = target.join(".airlock-extract-abc");
    let full = Error::Fs {
        step: "write file",
        path: staging.join("usr/bin/tool"),
        source: io::Error::from_raw_os_error(28),
    };
    let err = space_ran_out(full, target, &staging);
    assert_eq!(
        err.to_string(),
        "failed to extract into /mnt/target: the filesystem ran out of space (write file \
         usr/bin/tool); the staging folder was removed, free some space and run again"
    );
    assert!(!err.is_corrupt());
    // Other errors pass through unchanged.
    let denied = Error::Fs {
        step: "write file",
        path: staging.join("x"),
        source: io::Error::from_raw_os_error(13),
    };
    assert!(matches!(
        space_ran_out(denied, target, &staging),
        Error::Fs { .. }
    ));
}
