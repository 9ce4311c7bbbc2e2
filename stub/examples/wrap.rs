//! Wraps a folder into an installer with a given stub, for trying the stub by hand before
//! `airlock build` exists:
//!
//! ```text
//! cargo build -p airlock-stub --release
//! cargo run -p airlock-stub --example wrap -- target/x86_64-unknown-linux-gnu/release/airlock-stub DIR demo.run
//! ./demo.run info
//! ```

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use airlock_payload::{write_installer, BlobInput, BuildInfo, Entry, EntryKind, Sha256Digest, WriteOptions};
use anyhow::{Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stub, dir, out] = args.as_slice() else {
        anyhow::bail!("usage: wrap STUB DIR OUTPUT");
    };
    let stub = fs::read(stub).with_context(|| format!("failed to read {stub}"))?;
    let root = Path::new(dir);
    let mut paths = Vec::new();
    collect(root, "", &mut paths)?;
    paths.sort();
    let (mut entries, mut blobs, mut seen) = (Vec::new(), Vec::<BlobInput>::new(), HashMap::new());
    for rel in paths {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full)?;
        let kind = if meta.is_dir() {
            EntryKind::Dir
        } else if meta.file_type().is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(&full)?.to_string_lossy().into_owned(),
            }
        } else if let Some(first) = seen.get(&(meta.dev(), meta.ino())) {
            EntryKind::Hardlink {
                target: String::clone(first).try_into()?,
            }
        } else {
            seen.insert((meta.dev(), meta.ino()), rel.clone());
            let data = fs::read(&full)?;
            let digest = Sha256Digest::of(&data);
            if !data.is_empty() && !blobs.iter().any(|b| b.digest == digest) {
                let size = data.len() as u64;
                blobs.push(BlobInput {
                    digest,
                    size,
                    precompressed: false,
                    name: rel.clone(),
                    source: Box::new(data),
                });
            }
            EntryKind::File {
                size: meta.len(),
                digest,
            }
        };
        entries.push(Entry {
            path: rel.try_into()?,
            mode: meta.permissions().mode() & 0o7777,
            kind,
        });
    }
    let info = BuildInfo {
        name: root
            .file_name()
            .map_or("demo".into(), |n| n.to_string_lossy().into_owned()),
        version: "0.0.0-wrap".into(),
        platform: "linux/amd64".into(),
        created: 315_532_800,
        mtime: 315_532_800,
        builder: "airlock-stub wrap example".into(),
    };
    let mut file = fs::File::create(out)?;
    write_installer(
        &mut file,
        &stub,
        &info,
        blobs,
        entries,
        WriteOptions::default(),
        &|_| {},
    )?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn collect(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for child in fs::read_dir(root.join(rel))? {
        let child = child?;
        let name = child
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("non-UTF-8 name {n:?}"))?;
        let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if child.file_type()?.is_dir() {
            collect(root, &child_rel, out)?;
        }
        out.push(child_rel);
    }
    Ok(())
}
