//! Writes the seeds that derive from the base installer into `DIR/reader` and `DIR/index`:
//! the installer itself (with each ELF-end mode byte), and its index JSON (with and without
//! the fix-up flag) plus a few hand-made variants. The other seeds are plain text files.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: seeds DIR"));
    let base = &airlock_fuzz::fixture().bytes;
    let write = |sub: &str, name: &str, mode: u8, body: &[u8]| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let mut b = vec![mode];
        b.extend_from_slice(body);
        std::fs::write(d.join(name), b).unwrap();
    };
    for mode in 0..3 {
        write("reader", &format!("base-{mode}"), mode, base);
    }
    let json = airlock_fuzz::index_json(base);
    write("index", "base-fixed", 0, &json);
    write("index", "base-verbatim", 1, &json);
    let text = String::from_utf8(json).unwrap();
    write(
        "index",
        "no-images",
        0,
        text.split(",\"images\"").next().unwrap().as_bytes(),
    );
    write(
        "index",
        "empty",
        0,
        br#"{"frames":[],"blobs":[],"entries":[]}"#,
    );
    eprintln!("base installer: {} bytes", base.len());
}
