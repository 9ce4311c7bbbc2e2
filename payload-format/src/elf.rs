//! Where the program part of an installer ends, as its headers declare it: the payload starts
//! at that offset rounded up to 4096. Works on truncated files, so a cut copy can be
//! diagnosed. Also reads and writes the first stage's record (SPEC.md, "First stage"): the
//! small program in front of the stub that explains any truncation.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::program_header::PT_NOTE;
use goblin::elf::{header, program_header::ProgramHeader, section_header::SectionHeader, Header};

/// The end of the program part of `bytes`: for an installer with a first stage in front
/// ([`FirstStage`]), the end of the stub it runs (`stub_offset + stub_len`); otherwise the
/// end of the ELF image at offset 0 (see [`elf_image_end`]). The result may exceed
/// `bytes.len()` when the file was truncated inside the program. `None` when `bytes` does not
/// start with a parsable 64-bit ELF header.
pub fn declared_elf_end(bytes: &[u8]) -> Option<u64> {
    match FirstStage::find(bytes) {
        Some(first) => first.stub_offset.checked_add(first.stub_len),
        None => elf_image_end(bytes),
    }
}

/// The end of the ELF image at the start of `bytes` per SPEC.md: the largest end of the
/// section-header table, the program-header table, every segment's file range and every
/// non-`NOBITS` section's range. `None` when `bytes` does not start with a parsable 64-bit
/// ELF header.
pub fn elf_image_end(bytes: &[u8]) -> Option<u64> {
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

/// The owner name of the first stage's ELF note (SPEC.md, "First stage").
pub const FIRST_STAGE_NOTE_NAME: &[u8; 8] = b"AIRLOCK\0";
/// The type of the first stage's ELF note.
pub const FIRST_STAGE_NOTE_TYPE: u32 = 1;
/// The length of the note's descriptor: the record.
pub const FIRST_STAGE_RECORD_LEN: usize = 32;
/// Where `file_len` lies inside the record.
const FILE_LEN_AT: u64 = 24;

/// The record of an installer's first stage: where the stub lies in the file and how long the
/// whole installer is. It is the descriptor of an ELF note (owner `AIRLOCK`, type 1) in the
/// first stage's program headers; the builder writes `stub_offset` and `stub_len`, the writer
/// `file_len` (SPEC.md, "First stage").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstStage {
    /// File offset of the record (the note's descriptor), where [`FirstStage::to_bytes`] goes.
    pub record_offset: u64,
    /// Where the stub starts in the file (a multiple of 4096).
    pub stub_offset: u64,
    /// The stub's length.
    pub stub_len: u64,
    /// The length of the whole installer, without its signature section; 0 until the writer
    /// records it.
    pub file_len: u64,
}

impl FirstStage {
    /// The first stage at the start of `bytes`, when `bytes` starts with a 64-bit
    /// little-endian ELF whose program headers hold an `AIRLOCK` note of version 1 naming a
    /// stub (`stub_len > 0`, `stub_offset` past the note). `None` for a plain stub, an
    /// unpatched first stage, or anything else. Reads only the headers, so a truncated file
    /// works as long as its first page survived.
    pub fn find(bytes: &[u8]) -> Option<FirstStage> {
        let record_offset = Self::find_record(bytes)?;
        let at = usize::try_from(record_offset).ok()?;
        let rec = bytes.get(at..at + FIRST_STAGE_RECORD_LEN)?;
        let u64_at = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().expect("8 bytes"));
        let (version, flags) = (u32_at(rec, 0), u32_at(rec, 4));
        let first = FirstStage {
            record_offset,
            stub_offset: u64_at(8),
            stub_len: u64_at(16),
            file_len: u64_at(24),
        };
        let sane = version == 1
            && flags == 0
            && first.stub_len > 0
            && first.stub_offset % 4096 == 0
            && first.stub_offset > record_offset
            && first.stub_offset.checked_add(first.stub_len).is_some();
        sane.then_some(first)
    }

    /// The file offset of the `AIRLOCK` note's descriptor in the ELF at the start of `bytes`,
    /// whatever it holds: the builder uses this on the unpatched first stage.
    pub fn find_record(bytes: &[u8]) -> Option<u64> {
        if bytes.len() < header::header64::SIZEOF_EHDR || !bytes.starts_with(header::ELFMAG) {
            return None;
        }
        let h: Header = goblin::elf::Elf::parse_header(bytes).ok()?;
        if h.container().ok()? != Container::Big || h.endianness().ok()? != Endian::Little {
            return None;
        }
        let ctx = Ctx::new(Container::Big, Endian::Little);
        let phs = ProgramHeader::parse(bytes, h.e_phoff as usize, h.e_phnum as usize, ctx).ok()?;
        phs.iter().filter(|p| p.p_type == PT_NOTE).find_map(|p| {
            let start = usize::try_from(p.p_offset).ok()?;
            let notes = bytes.get(start..start.checked_add(usize::try_from(p.p_filesz).ok()?)?)?;
            let mut i = 0usize;
            while i + 12 <= notes.len() {
                let (namesz, descsz, kind) = (
                    u32_at(notes, i) as usize,
                    u32_at(notes, i + 4) as usize,
                    u32_at(notes, i + 8),
                );
                let name_at = i + 12;
                let desc_at = name_at + namesz.next_multiple_of(4);
                let next = desc_at.checked_add(descsz.next_multiple_of(4))?;
                if next > notes.len() {
                    return None;
                }
                if kind == FIRST_STAGE_NOTE_TYPE
                    && &notes[name_at..name_at + namesz] == FIRST_STAGE_NOTE_NAME
                    && descsz == FIRST_STAGE_RECORD_LEN
                {
                    return Some((start + desc_at) as u64);
                }
                i = next;
            }
            None
        })
    }

    /// The record's 32 bytes: version 1, flags 0, `stub_offset`, `stub_len`, `file_len`.
    pub fn to_bytes(&self) -> [u8; FIRST_STAGE_RECORD_LEN] {
        let mut b = [0u8; FIRST_STAGE_RECORD_LEN];
        b[0..4].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.stub_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.stub_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.file_len.to_le_bytes());
        b
    }

    /// The file offset of the record's `file_len`, which the writer fills in last.
    pub fn file_len_offset(&self) -> u64 {
        self.record_offset + FILE_LEN_AT
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
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

    /// A minimal ELF header with one `PT_NOTE` program header holding `note`.
    fn elf_with_note(note: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(header::ELFMAG);
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut b[64..];
        ph[0..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes()); // p_filesz
        b.extend_from_slice(note);
        b
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n
    }

    #[test]
    fn a_first_stage_record_is_found_after_other_notes_and_read_back() {
        let first = FirstStage {
            record_offset: 0,
            stub_offset: 4096,
            stub_len: 10_000,
            file_len: 99_999,
        };
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8]);
        notes.extend(note(
            FIRST_STAGE_NOTE_NAME,
            FIRST_STAGE_NOTE_TYPE,
            &first.to_bytes(),
        ));
        let mut bytes = elf_with_note(&notes);
        bytes.resize(4096, 0);
        let found = FirstStage::find(&bytes).unwrap();
        assert_eq!(found.record_offset, 120 + 24 + 20);
        assert_eq!(
            found,
            FirstStage {
                record_offset: found.record_offset,
                ..first
            }
        );
        assert_eq!(found.file_len_offset(), found.record_offset + 24);
        // The program part ends where the stub ends, even when the file is cut before it.
        assert_eq!(declared_elf_end(&bytes[..200]), Some(14_096));
    }

    #[test]
    fn an_unpatched_or_foreign_note_is_not_a_first_stage() {
        let unpatched = FirstStage {
            record_offset: 0,
            stub_offset: 0,
            stub_len: 0,
            file_len: 0,
        };
        let bytes = elf_with_note(&note(
            FIRST_STAGE_NOTE_NAME,
            FIRST_STAGE_NOTE_TYPE,
            &unpatched.to_bytes(),
        ));
        assert_eq!(FirstStage::find_record(&bytes), Some(120 + 20));
        assert_eq!(FirstStage::find(&bytes), None);
        let unaligned = FirstStage {
            stub_offset: 4000,
            stub_len: 1,
            ..unpatched
        };
        let bytes = elf_with_note(&note(FIRST_STAGE_NOTE_NAME, 1, &unaligned.to_bytes()));
        assert_eq!(FirstStage::find(&bytes), None);
        let other = elf_with_note(&note(b"AIRLOCX\0", 1, &[0; 32]));
        assert_eq!(FirstStage::find_record(&other), None);
        let ls = std::fs::read("/bin/ls").unwrap();
        assert_eq!(FirstStage::find(&ls), None);
        // A note that claims more bytes than its segment holds is ignored, not a panic.
        let mut bad = note(FIRST_STAGE_NOTE_NAME, 1, &[0; 32]);
        bad[4..8].copy_from_slice(&4000u32.to_le_bytes());
        assert_eq!(FirstStage::find_record(&elf_with_note(&bad)), None);
    }
}
