//! Installing version N+1 over N into a temporary `--root` (engine `none`, the registry as
//! a daemon): files N placed and N+1 lacks are removed unless the user changed them, the
//! earlier persistent copy goes (or stays with `--keep-previous`), and a downgrade is
//! refused without `--allow-downgrade`, changing nothing.

mod util;

use std::fs;
use std::path::{Path, PathBuf};

use util::Workdir;

/// Builds `demo` `version` from the files `(path, content)` under `dir` of `work`.
fn build(work: &Workdir, version: &str, files: &[(&str, &str)]) -> PathBuf {
    let src = format!("src-{version}");
    for (path, content) in files {
        work.write_file(format!("{src}/{path}"), content);
    }
    work.write_spec(&format!(
        "name: demo\nversion: \"{version}\"\nfiles:\n  - src: {src}/\n    dest: /\n"
    ));
    work.build(&format!("demo-{version}.run"))
}

fn install(work: &Workdir, installer: &Path, root: &Path, addr: &str, extra: &[&str]) -> util::Run {
    let mut args = vec![
        "install",
        "--root",
        root.to_str().unwrap(),
        "--listen",
        addr,
        "--yes",
    ];
    args.extend_from_slice(extra);
    work.run_installer(installer, &args)
}

/// Uninstalls with whatever persistent copy is left, so no daemon outlives the test.
struct Cleanup<'a>(&'a Workdir, PathBuf);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let state = self.1.join("var/lib/airlock");
        let Ok(dir) = fs::read_dir(&state) else {
            return;
        };
        let copy = dir
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "run"));
        if let Some(copy) = copy {
            let _ = self.0.run_installer(
                &copy,
                &["-q", "uninstall", "--root", self.1.to_str().unwrap()],
            );
        }
    }
}

#[test]
fn an_upgrade_removes_what_the_new_version_lacks_keeps_user_changes_and_the_old_copy_goes() {
    let work = Workdir::new();
    let v1 = build(
        &work,
        "1.0",
        &[
            ("etc/demo/config.yaml", "version: 1\n"),
            ("etc/demo/old-only.conf", "gone in 1.1\n"),
            ("usr/share/demo/old/a.txt", "a\n"),
            ("usr/share/demo/old/b.txt", "b\n"),
            ("etc/demo/tuned.conf", "as shipped\n"),
            ("etc/demo/same.txt", "unchanged\n"),
        ],
    );
    let v11 = build(
        &work,
        "1.10",
        &[
            ("etc/demo/config.yaml", "version: 1.10\n"),
            ("etc/demo/same.txt", "unchanged\n"),
            ("etc/demo/new.conf", "new in 1.10\n"),
        ],
    );
    let root = work.join("root");
    let _cleanup = Cleanup(&work, root.clone());
    let addr = util::free_addr();
    install(&work, &v1, &root, &addr, &[]).success();
    fs::write(root.join("etc/demo/tuned.conf"), "changed by the user\n").unwrap();
    let copies = root.join("var/lib/airlock");

    let up = install(&work, &v11, &root, &addr, &[]).success();
    assert_eq!(
        fs::read_to_string(root.join("etc/demo/config.yaml")).unwrap(),
        "version: 1.10\n"
    );
    assert!(root.join("etc/demo/new.conf").exists());
    assert!(root.join("etc/demo/same.txt").exists());
    for gone in ["etc/demo/old-only.conf", "usr/share/demo/old"] {
        assert!(
            !root.join(gone).exists(),
            "{gone} is still there:\n{}",
            up.stdout
        );
    }
    assert_eq!(
        fs::read_to_string(root.join("etc/demo/tuned.conf")).unwrap(),
        "changed by the user\n",
        "a file the user changed was not kept"
    );
    assert!(
        up.stdout
            .contains("kept 1 changed since 1.0 installed them: /etc/demo/tuned.conf"),
        "{}",
        up.stdout
    );
    assert!(!copies.join("demo-1.0.run").exists(), "the old copy stayed");
    assert!(copies.join("demo-1.10.run").exists());
    assert!(
        up.stdout
            .contains("upgrade from 1.0: removed its installer copy"),
        "{}",
        up.stdout
    );

    // 1.9 is older than 1.10: refused, nothing changes.
    let v19 = build(&work, "1.9", &[("etc/demo/config.yaml", "version: 1.9\n")]);
    let refused = install(&work, &v19, &root, &addr, &[]).expect_code(1);
    refused.stderr_has("demo 1.10 is installed and this installer is the older 1.9");
    refused.stderr_has("--allow-downgrade");
    assert_eq!(
        fs::read_to_string(root.join("etc/demo/config.yaml")).unwrap(),
        "version: 1.10\n"
    );
    assert!(copies.join("demo-1.10.run").exists());
    assert!(!copies.join("demo-1.9.run").exists());

    // With --allow-downgrade and --keep-previous: installed, the 1.10 copy stays.
    let down = install(
        &work,
        &v19,
        &root,
        &addr,
        &["--allow-downgrade", "--keep-previous"],
    )
    .success();
    assert_eq!(
        fs::read_to_string(root.join("etc/demo/config.yaml")).unwrap(),
        "version: 1.9\n"
    );
    assert!(!root.join("etc/demo/new.conf").exists(), "{}", down.stdout);
    assert!(
        copies.join("demo-1.10.run").exists(),
        "--keep-previous did not keep it"
    );
    assert!(copies.join("demo-1.9.run").exists());
}
