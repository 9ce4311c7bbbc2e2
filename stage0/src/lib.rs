//! The first stage of an airlock installer, as bytes for the builder to put in front of the
//! stub.
//!
//! A truncated installer used to crash with SIGSEGV when the cut fell inside the stub's loaded
//! segments (issue 15). The first stage is a static program of a few KiB (`src/program.rs`,
//! `no_std`, raw system calls) whose loaded segments lie in the file's first pages. When run,
//! it opens its own file without `/proc`, compares its length with the installer length the
//! writer recorded in its `AIRLOCK` ELF note, prints the stub's "installer is truncated"
//! message with exit code 3 when the file is short, and otherwise runs the real stub from the
//! file's bytes through a memfd. The layout of the note and of the file is in
//! payload-format/SPEC.md, "First stage"; [`airlock_payload::FirstStage`] reads and writes it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stage0"));

/// The machine the first stage is built for, spelled as `uname -m` does.
pub const MACHINE: &str = "x86_64";

/// The first-stage program (an unpatched static ELF executable) for `machine` (`x86_64`,
/// spelled as `uname -m` does), or `None` when there is none for that machine: the builder
/// then writes the installer without a first stage.
pub fn program_for(machine: &str) -> Option<&'static [u8]> {
    (machine == MACHINE && !PROGRAM.is_empty()).then_some(PROGRAM)
}
