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

#[cfg(test)]
mod tests {
    use super::*;
    use goblin::elf::program_header::PT_LOAD;
    use goblin::elf::Elf;

    /// The point of the first stage (issue 15): any truncation at or beyond 64 KiB must leave
    /// every byte the kernel maps for it in the file.
    const LIMIT: u64 = 64 * 1024;

    fn program() -> &'static [u8] {
        program_for(MACHINE).expect("this workspace builds the first stage for x86_64")
    }

    #[test]
    fn the_first_stage_loaded_segments_end_well_below_64_kib() {
        let elf = Elf::parse(program()).unwrap();
        let loads: Vec<_> = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .collect();
        assert!(!loads.is_empty());
        let file_end = loads.iter().map(|p| p.p_offset + p.p_filesz).max().unwrap();
        assert!(
            file_end < LIMIT / 2,
            "loaded segments end at byte {file_end}"
        );
        assert!(
            (program().len() as u64) < LIMIT / 2,
            "{} bytes",
            program().len()
        );
    }

    #[test]
    fn the_first_stage_is_static_and_carries_an_empty_record() {
        let elf = Elf::parse(program()).unwrap();
        assert!(elf.interpreter.is_none());
        assert!(elf.libraries.is_empty());
        assert_eq!(elf.header.e_machine, goblin::elf::header::EM_X86_64);
        let at = airlock_payload::FirstStage::find_record(program()).unwrap() as usize;
        let record = &program()[at..at + airlock_payload::FIRST_STAGE_RECORD_LEN];
        assert_eq!(&record[..4], &1u32.to_le_bytes());
        assert!(record[4..].iter().all(|&b| b == 0), "{record:?}");
        // Unpatched, it is not mistaken for an installer's first stage.
        assert_eq!(airlock_payload::FirstStage::find(program()), None);
    }

    #[test]
    fn there_is_no_first_stage_for_other_machines() {
        assert_eq!(program_for("aarch64"), None);
        assert_eq!(program_for(""), None);
    }

    #[test]
    fn an_unpatched_first_stage_run_alone_says_it_names_no_program() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage0");
        std::fs::write(&path, program()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = std::process::Command::new(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains("names no program"), "{stderr}");
    }
}
