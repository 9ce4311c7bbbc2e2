//! Compiles `src/program.rs`, the first-stage program, with rustc directly and leaves it in
//! `$OUT_DIR/stage0` for `src/lib.rs` to embed.
//!
//! Why not an ordinary `[[bin]]`: a `no_std` program needs `panic=abort`, and cargo sets the
//! panic strategy only per profile, for the whole workspace (the stub and the builder keep
//! unwinding). Linking by hand also keeps it tiny: no C runtime, no libc, no separate-code
//! padding, no unwind tables. On a target other than x86_64 Linux the file is empty and the
//! builder writes installers without a first stage.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/program.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("stage0");
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" {
        std::fs::write(&out, b"").expect("write an empty first stage");
        return;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition",
        "2021",
        "--crate-type",
        "bin",
        "--crate-name",
        "airlock_stage0",
    ])
    .args(["--target", &target])
    .args([
        "-C",
        "panic=abort",
        "-C",
        "opt-level=s",
        "-C",
        "codegen-units=1",
    ])
    .args([
        "-C",
        "relocation-model=static",
        "-C",
        "target-feature=+crt-static",
    ])
    .args([
        "-C",
        "strip=symbols",
        "-C",
        "force-unwind-tables=no",
        "-C",
        "debuginfo=0",
    ]);
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        cmd.arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--gc-sections",
        "-Wl,--build-id=none",
        "-Wl,--no-eh-frame-hdr",
        "-Wl,-z,noseparate-code",
        "-Wl,-z,norelro",
        "-Wl,-z,noexecstack",
    ] {
        cmd.arg("-C").arg(format!("link-arg={arg}"));
    }
    cmd.arg("-o").arg(&out).arg("src/program.rs");
    let status = cmd.status().expect("run rustc for the first stage");
    assert!(
        status.success(),
        "rustc failed to build the first stage (src/program.rs)"
    );
}
