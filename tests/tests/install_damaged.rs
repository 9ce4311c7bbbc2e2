//! A damaged installer is refused by `install` before anything changes: no root folder, no
//! persistent copy (which the registry would serve from), no files (found by the
//! reliability sweep: install used to copy a file whose stub was damaged).

mod util;

use util::{flip_byte, free_addr, u64_of, Workdir};

#[test]
fn install_refuses_a_damaged_installer_before_persisting_it() {
    let w = Workdir::new();
    w.write_file("src/etc/motd", "hello\n");
    w.write_spec("name: demo\nversion: \"1.0\"\nfiles:\n  - src: src/\n    dest: /\n");
    let installer = w.build("demo.run");
    let po = u64_of(&w.inspect_json(&installer), "payload_offset");
    flip_byte(&installer, po - 1); // stub padding: never executed
    w.run_installer(&installer, &["-q", "verify"])
        .expect_code(3);
    let root = w.join("root");
    let run = w.run_installer(
        &installer,
        &[
            "-q",
            "install",
            "--root",
            root.to_str().unwrap(),
            "--listen",
            &free_addr(),
            "--yes",
        ],
    );
    assert_eq!(
        run.code,
        Some(3),
        "install accepted a damaged installer:\n{}",
        run.describe()
    );
    assert!(
        !root.exists(),
        "install created {} for a damaged installer",
        root.display()
    );
}
