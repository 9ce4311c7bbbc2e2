//! Where the stub's ELF image ends, as its headers declare it: the payload starts at that
//! offset rounded up to 4096. Works on truncated files, so a cut copy can be diagnosed.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{header, program_header::ProgramHeader, section_header::SectionHeader, Header};

/// The end of the ELF image in `bytes` per SPEC.md: the largest end of the section-header
/// table, the program-header table, every segment's file range and every non-`NOBITS`
/// section's range. The result may exceed `bytes.len()` when the file was truncated inside
/// the program. `None` when `bytes` does not start with a parsable 64-bit ELF header.
pub fn declared_elf_end(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < header::header64::SIZEOF_EHDR || !bytes.starts_with(header::ELFMAG) {
        return None;
    }
    let h: Header = goblin::elf::Elf::parse_header(bytes).ok()?;
    let container = h.container().ok()?;
    let endian: Endian = h.endianness().ok()?;
    if container != Container::Big {
        return None;
    }
    let ctx = Ctx::new(container, endian);
    let table_end = |off: u64, n: u16, size: u16| off.checked_add(u64::from(n) * u64::from(size));
    let mut end = u64::from(h.e_ehsize);
    end = end.max(table_end(h.e_phoff, h.e_phnum, h.e_phentsize)?);
    end = end.max(table_end(h.e_shoff, h.e_shnum, h.e_shentsize)?);
    if let Ok(phs) = ProgramHeader::parse(bytes, h.e_phoff as usize, h.e_phnum as usize, ctx) {
        for p in phs {
            end = end.max(p.p_offset.checked_add(p.p_filesz)?);
        }
    }
    if let Ok(shs) = SectionHeader::parse(bytes, h.e_shoff as usize, h.e_shnum as usize, ctx) {
        for s in shs
            .iter()
            .filter(|s| s.sh_type != goblin::elf::section_header::SHT_NOBITS)
        {
            end = end.max(s.sh_offset.checked_add(s.sh_size)?);
        }
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_executable_ends_where_its_file_ends() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert_eq!(declared_elf_end(&ls), Some(ls.len() as u64));
    }

    #[test]
    fn a_truncated_executable_still_declares_its_full_length() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert_eq!(declared_elf_end(&ls[..ls.len() / 2]), Some(ls.len() as u64));
        assert_eq!(declared_elf_end(&ls[..100]), Some(ls.len() as u64));
        assert_eq!(declared_elf_end(b"#!/bin/sh\n"), None);
    }
}
