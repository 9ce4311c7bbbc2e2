//! Arbitrary text as `airlock.yaml`: `Spec::from_str_at` must answer Ok or a located error,
//! never panic, for any input. The spec's folder holds a few files and folders so that
//! `src:` and `from:` paths sometimes exist.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use airlock_builder::spec::{Error, Spec};
use libfuzzer_sys::fuzz_target;

fn spec_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        for d in ["rootfs/etc", "images/app", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["bin/tool", "images/etcd.tar", "rootfs/etc/motd"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let path = root.join("airlock.yaml");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = spec_path();
    match Spec::from_str_at(text, path) {
        Ok(spec) => {
            assert!(!spec.name.as_str().is_empty());
            for f in &spec.files {
                assert!(f.src.is_absolute(), "{:?}", f.src);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            if let Error::Invalid { line, column, .. } = e {
                assert!(line >= 1 && column >= 1, "{msg}");
            }
        }
    }
});
