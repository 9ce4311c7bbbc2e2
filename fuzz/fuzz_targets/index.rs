//! Arbitrary index JSON inside an otherwise valid installer ([`airlock_fuzz::reframe`]
//! fixes every checksum and, when the first byte says so, the frame digests and trailer
//! counts), so the fuzzer works on the index validator and the readers behind it. A
//! validated index must never make a reader panic or read outside the file.
#![no_main]

use airlock_payload::Installer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    let base = &airlock_fuzz::fixture().bytes;
    let file = airlock_fuzz::reframe(base, json, mode & 1 == 0);
    let installer = Installer::open(&file, None).expect("reframe writes a valid trailer and meta");
    if let Ok(payload) = installer.load_index() {
        airlock_fuzz::exercise(&payload);
    }
});
