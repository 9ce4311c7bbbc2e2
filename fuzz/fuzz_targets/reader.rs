//! Arbitrary bytes as an installer: `Installer::open` (trailer, header, meta, and the
//! missing-trailer diagnosis with and without an ELF end), `load_index`, and on success every
//! reader. Nothing may panic, whatever the bytes.
#![no_main]

use airlock_payload::{declared_elf_end, Installer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    // The first byte picks the ELF end the stub would pass: none, the one its headers
    // declare (parsing them is fuzzed too), or a number taken from the input.
    let elf_end = match mode % 3 {
        0 => None,
        1 => declared_elf_end(bytes),
        _ => bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) % (1 << 20)),
    };
    let Ok(installer) = Installer::open(bytes, elf_end) else {
        return;
    };
    let _ = installer.verify_stub();
    if let Ok(payload) = installer.load_index() {
        airlock_fuzz::exercise(&payload);
    }
});
