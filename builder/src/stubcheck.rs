//! Checks that a stub is an executable the installer can be built on.
//!
//! Every installer *is* the stub with a payload appended, and it must run in an empty chroot on
//! the target platform. [`check_stub`] uses goblin to make sure a stub is a static ELF executable
//! for the expected machine before anything is appended to it; [`elf_end`] finds where the ELF
//! image ends, so a stub that already carries data (a payload, a signature) can be told apart
//! from a clean one. [`with_first_stage`] puts the first stage (the `airlock-stage0` crate)
//! in front of a checked stub, so that a truncated installer explains itself.

use goblin::elf::header::{self, Header};
use goblin::elf::program_header::PT_INTERP;
use goblin::elf::section_header::SHT_NOBITS;
use goblin::elf::Elf;

/// A specialised `Result` for stub checks.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with a stub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// The ELF structures could not be parsed.
    #[error("failed to parse the stub's ELF headers")]
    Parse(#[source] goblin::error::Error),
    /// The stub asks for a dynamic loader.
    #[error("stub is dynamically linked (interpreter {0})")]
    Interpreter(String),
    /// The stub needs shared libraries.
    #[error("stub is dynamically linked (needs {})", .0.join(", "))]
    NeedsLibraries(Vec<String>),
    /// The ELF file is not an executable (a relocatable object, a shared library, a core dump).
    #[error("stub is not an executable (ELF type {0})")]
    NotExecutable(&'static str),
    /// The stub is for another machine than the platform.
    #[error("stub is for machine {machine}, platform wants {wanted}")]
    WrongMachine {
        /// The stub's machine, such as `aarch64`.
        machine: String,
        /// The platform's architecture, such as `amd64`.
        wanted: String,
    },
    /// The platform architecture is not one airlock builds for.
    #[error("unsupported platform architecture {0}, expected amd64 or arm64")]
    UnsupportedArch(String),
    /// The headers describe more bytes than the file has.
    #[error(
        "stub is truncated: its ELF image ends at byte {elf_end} but the file has {len} bytes"
    )]
    Truncated {
        /// Where the ELF image ends.
        elf_end: u64,
        /// The file's length.
        len: u64,
    },
    /// An offset plus a size does not fit in 64 bits.
    #[error("failed to compute the end of the ELF image: an offset overflows")]
    Overflow,
}

/// What [`check_stub`] found out about a good stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubInfo {
    /// The ELF machine, such as `x86_64` or `aarch64`.
    pub machine: String,
    /// Where the ELF image ends (see [`elf_end`]); anything after it is appended data.
    pub elf_end: u64,
}

/// The program part of an installer for the checked `stub`: the first stage (its record
/// naming where the stub lies), zero padding to the next 4096-byte boundary, then the stub
/// (payload-format SPEC.md, "First stage"). The writer records the installer's length in the
/// first stage later. Without a first stage for the stub's machine (only x86_64 has one), the
/// stub alone.
pub fn with_first_stage(stub: &[u8], info: &StubInfo) -> Vec<u8> {
    let Some(program) = airlock_stage0::program_for(&info.machine) else {
        return stub.to_vec();
    };
    let record_offset = airlock_payload::FirstStage::find_record(program)
        .expect("the first stage built in-tree carries its AIRLOCK note");
    let stub_offset = (program.len() as u64).next_multiple_of(4096);
    let record = airlock_payload::FirstStage {
        record_offset,
        stub_offset,
        stub_len: stub.len() as u64,
        file_len: 0,
    };
    let mut out = Vec::with_capacity(stub_offset as usize + stub.len());
    out.extend_from_slice(program);
    let at = record_offset as usize;
    out[at..at + airlock_payload::FIRST_STAGE_RECORD_LEN].copy_from_slice(&record.to_bytes());
    out.resize(stub_offset as usize, 0);
    out.extend_from_slice(stub);
    out
}

/// Checks that `bytes` is a static ELF executable for `expected_arch` (`amd64` or `arm64`).
///
/// Accepted: `ET_EXEC`, or `ET_DYN` with an entry point and no `PT_INTERP` (static-pie); no
/// `PT_INTERP` and no `DT_NEEDED`; the machine of the architecture. Each failure names what is
/// wrong.
pub fn check_stub(bytes: &[u8], expected_arch: &str) -> Result<StubInfo> {
    let wanted_machine = match expected_arch {
        "amd64" => header::EM_X86_64,
        "arm64" => header::EM_AARCH64,
        other => return Err(Error::UnsupportedArch(other.to_owned())),
    };
    let elf = parse(bytes)?;
    if let Some(interpreter) = elf.interpreter {
        return Err(Error::Interpreter(interpreter.to_owned()));
    }
    if elf
        .program_headers
        .iter()
        .any(|segment| segment.p_type == PT_INTERP)
    {
        return Err(Error::Interpreter("unreadable".to_owned()));
    }
    match elf.header.e_type {
        header::ET_EXEC => {}
        header::ET_DYN if elf.entry != 0 => {}
        other => return Err(Error::NotExecutable(header::et_to_str(other))),
    }
    if !elf.libraries.is_empty() {
        let libraries = elf.libraries.iter().map(|lib| lib.to_string()).collect();
        return Err(Error::NeedsLibraries(libraries));
    }
    let machine = machine_name(elf.header.e_machine);
    if elf.header.e_machine != wanted_machine {
        return Err(Error::WrongMachine {
            machine,
            wanted: expected_arch.to_owned(),
        });
    }
    let end = image_end(&elf)?;
    let len = bytes.len() as u64;
    if end > len {
        return Err(Error::Truncated { elf_end: end, len });
    }
    Ok(StubInfo {
        machine,
        elf_end: end,
    })
}

/// The end of the ELF image in `bytes`: the largest end of the section header table, the
/// program header table, every segment's file range and every section's file range (except
/// `SHT_NOBITS` sections, which take no file space).
///
/// For a plain executable this is the file's length; anything after it was appended.
pub fn elf_end(bytes: &[u8]) -> Result<u64> {
    image_end(&parse(bytes)?)
}

fn parse(bytes: &[u8]) -> Result<Elf<'_>> {
    if !bytes.starts_with(header::ELFMAG) {
        return Err(Error::NotElf);
    }
    Elf::parse(bytes).map_err(Error::Parse)
}

fn image_end(elf: &Elf<'_>) -> Result<u64> {
    let header: &Header = &elf.header;
    let table_end = |offset: u64, count: usize, entry_size: u16| -> Result<u64> {
        if count == 0 {
            return Ok(0);
        }
        (count as u64)
            .checked_mul(u64::from(entry_size))
            .and_then(|size| offset.checked_add(size))
            .ok_or(Error::Overflow)
    };
    let range_end = |offset: u64, size: u64| offset.checked_add(size).ok_or(Error::Overflow);

    let mut end = u64::from(header.e_ehsize);
    end = end.max(table_end(
        header.e_phoff,
        elf.program_headers.len(),
        header.e_phentsize,
    )?);
    end = end.max(table_end(
        header.e_shoff,
        elf.section_headers.len(),
        header.e_shentsize,
    )?);
    for segment in &elf.program_headers {
        if segment.p_filesz > 0 {
            end = end.max(range_end(segment.p_offset, segment.p_filesz)?);
        }
    }
    for section in &elf.section_headers {
        if section.sh_type != SHT_NOBITS && section.sh_size > 0 {
            end = end.max(range_end(section.sh_offset, section.sh_size)?);
        }
    }
    Ok(end)
}

/// The machine's name as `uname -m` and toolchains spell it.
fn machine_name(machine: u16) -> String {
    match machine {
        header::EM_X86_64 => "x86_64".to_owned(),
        header::EM_AARCH64 => "aarch64".to_owned(),
        header::EM_386 => "i386".to_owned(),
        header::EM_ARM => "arm".to_owned(),
        header::EM_RISCV => "riscv".to_owned(),
        other => header::machine_to_str(other).to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_exe() -> Vec<u8> {
        std::fs::read("/proc/self/exe").unwrap()
    }

    fn own_arch() -> &'static str {
        if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        }
    }

    #[test]
    fn static_test_binary_passes() {
        let bytes = own_exe();
        let info = check_stub(&bytes, own_arch()).unwrap();
        let expected = if cfg!(target_arch = "aarch64") {
            "aarch64"
        } else {
            "x86_64"
        };
        assert_eq!(info.machine, expected);
        assert_eq!(info.elf_end, bytes.len() as u64);
    }

    #[test]
    fn wrong_machine_is_named() {
        let (arch, machine) = if cfg!(target_arch = "aarch64") {
            ("amd64", "aarch64")
        } else {
            ("arm64", "x86_64")
        };
        let err = check_stub(&own_exe(), arch).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("stub is for machine {machine}, platform wants {arch}")
        );
    }

    #[test]
    fn machine_is_checked_against_the_header() {
        let mut bytes = own_exe();
        // e_machine is the u16 at offset 18 (little-endian on both supported machines).
        bytes[18..20].copy_from_slice(&header::EM_AARCH64.to_le_bytes());
        let err = check_stub(&bytes, "amd64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "stub is for machine aarch64, platform wants amd64"
        );
    }

    #[test]
    fn dynamic_binary_is_rejected() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let err = check_stub(&bytes, own_arch()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("stub is dynamically linked (interpreter /"),
            "{text}"
        );
    }

    #[test]
    fn random_bytes_are_not_an_elf() {
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(
            check_stub(&bytes, "amd64").unwrap_err().to_string(),
            "not an ELF file"
        );
        assert!(matches!(elf_end(&bytes), Err(Error::NotElf)));
        assert!(matches!(elf_end(b""), Err(Error::NotElf)));
    }

    #[test]
    fn truncated_elf_fails() {
        let bytes = own_exe();
        assert!(check_stub(&bytes[..64], own_arch()).is_err());
        let cut = &bytes[..bytes.len() - 1];
        assert!(check_stub(cut, own_arch()).is_err());
    }

    #[test]
    fn unknown_arch_is_rejected() {
        let err = check_stub(&own_exe(), "riscv64").unwrap_err();
        assert!(matches!(err, Error::UnsupportedArch(_)), "{err}");
    }

    #[test]
    fn elf_end_of_ls_is_its_length() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        assert_eq!(elf_end(&bytes).unwrap(), bytes.len() as u64);
    }

    #[test]
    fn the_first_stage_is_a_static_executable_for_this_machine_and_names_the_stub_after_it() {
        let stub = own_exe();
        let info = check_stub(&stub, own_arch()).unwrap();
        let program = with_first_stage(&stub, &info);
        if cfg!(not(target_arch = "x86_64")) {
            assert_eq!(program, stub);
            return;
        }
        let first = check_stub(&program, own_arch()).unwrap();
        assert_eq!(first.machine, "x86_64");
        let record = airlock_payload::FirstStage::find(&program).unwrap();
        assert_eq!(record.stub_offset % 4096, 0);
        assert!(record.stub_offset >= first.elf_end, "{record:?}, {first:?}");
        assert_eq!(record.stub_len, stub.len() as u64);
        assert_eq!(record.file_len, 0);
        assert_eq!(&program[record.stub_offset as usize..], &stub[..]);
        assert_eq!(program.len() as u64, record.stub_offset + record.stub_len);
        assert_eq!(
            airlock_payload::declared_elf_end(&program),
            Some(program.len() as u64)
        );
    }

    #[test]
    fn elf_end_ignores_appended_data() {
        let mut bytes = own_exe();
        let len = bytes.len() as u64;
        bytes.extend_from_slice(&[0xa5; 4096]);
        assert_eq!(elf_end(&bytes).unwrap(), len);
        assert_eq!(check_stub(&bytes, own_arch()).unwrap().elf_end, len);
    }
}
