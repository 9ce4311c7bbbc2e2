//! Test helpers: source trees, container images, and in-memory installers built from them.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use airlock_oci::media;
use airlock_payload::{
    write_installer, BlobInput, BuildInfo, Entry, EntryKind, Image, ManifestRef, PayloadContents,
    Sha256Digest, WriteOptions,
};
use tempfile::TempDir;

/// The mtime the test installers record.
pub const MTIME: u64 = 1_600_000_000;

/// Bytes that do not compress, from a simple seeded generator.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small tree with every entry type:
///
/// ```text
/// bin/ 0755          bin/tool 0755 (10 kB)   bin/link -> tool   bin/twin = hardlink of bin/tool
/// big/data.bin 0644 (5 MiB + 3, spans two frames)
/// deep/a/b/c/leaf.txt 0640
/// etc/ 0750          etc/conf 0600           etc/copy (same bytes as conf)   etc/empty (0 bytes)
/// ro/ 0555           ro/inside.txt 0444
/// ```
pub fn sample_tree() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    file("bin/tool", &noise(1, 10_000), 0o755);
    symlink("tool", root.join("bin/link")).unwrap();
    fs::hard_link(root.join("bin/tool"), root.join("bin/twin")).unwrap();
    file("big/data.bin", &noise(2, (5 << 20) + 3), 0o644);
    file("deep/a/b/c/leaf.txt", b"leaf\n", 0o640);
    file("etc/conf", b"key = value\n", 0o600);
    file("etc/copy", b"key = value\n", 0o600);
    file("etc/empty", b"", 0o644);
    file("ro/inside.txt", b"read only\n", 0o444);
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    dir
}

/// Walks `root` (symlinks not followed) into index entries and blobs in first-use order,
/// the way the builder does.
pub fn entries_from_tree(root: &Path) -> (Vec<Entry>, Vec<BlobInput>) {
    let mut paths = Vec::new();
    collect(root, "", &mut paths);
    paths.sort();
    let mut entries = Vec::new();
    let mut blobs: Vec<BlobInput> = Vec::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    for rel in paths {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full).unwrap();
        let mode = meta.mode() & 0o7777;
        let kind = if meta.is_dir() {
            EntryKind::Dir
        } else if meta.file_type().is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(&full).unwrap().to_str().unwrap().to_owned(),
            }
        } else if let Some(first) = inodes.get(&(meta.dev(), meta.ino())) {
            EntryKind::Hardlink {
                target: first.clone().try_into().unwrap(),
            }
        } else {
            inodes.insert((meta.dev(), meta.ino()), rel.clone());
            let data = fs::read(&full).unwrap();
            let digest = Sha256Digest::of(&data);
            if !data.is_empty() && !blobs.iter().any(|b| b.digest == digest) {
                blobs.push(BlobInput {
                    digest,
                    size: data.len() as u64,
                    precompressed: false,
                    name: rel.clone(),
                    source: Box::new(data.clone()),
                });
            }
            EntryKind::File {
                size: data.len() as u64,
                digest,
            }
        };
        entries.push(Entry {
            path: rel.try_into().unwrap(),
            mode,
            kind,
        });
    }
    (entries, blobs)
}

fn collect(root: &Path, rel: &str, out: &mut Vec<String>) {
    for child in fs::read_dir(root.join(rel)).unwrap() {
        let child = child.unwrap();
        let name = child.file_name().into_string().unwrap();
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if child.file_type().unwrap().is_dir() {
            collect(root, &child_rel, out);
        }
        out.push(child_rel);
    }
}

/// An installer (5000 zero bytes as the stub) holding the tree at `root`.
pub fn installer_from_tree(root: &Path) -> Vec<u8> {
    installer_with_stub(root, &[0u8; 5000])
}

/// An installer with `stub` as its program part, holding the tree at `root`.
pub fn installer_with_stub(root: &Path, stub: &[u8]) -> Vec<u8> {
    let (entries, blobs) = entries_from_tree(root);
    let info = BuildInfo {
        name: "demo".into(),
        version: "1.0".into(),
        platform: "linux/amd64".into(),
        created: MTIME,
        mtime: MTIME,
        builder: "airlock-stub tests".into(),
    };
    let mut out = std::io::Cursor::new(Vec::new());
    write_installer(
        &mut out,
        stub,
        &info,
        PayloadContents {
            blobs,
            entries,
            ..Default::default()
        },
        WriteOptions::default(),
        &|_| {},
    )
    .unwrap();
    out.into_inner()
}

/// Flips one byte inside frame `frame` of the installer in `bytes`.
pub fn damage_frame(bytes: &mut [u8], frame: usize) {
    let (start, len) = {
        let installer = airlock_payload::Installer::open(bytes, None).unwrap();
        let payload = installer.load_index().unwrap();
        let stored = payload.frame_stored(frame);
        (
            stored.as_ptr() as usize - bytes.as_ptr() as usize,
            stored.len(),
        )
    };
    bytes[start + len / 2] ^= 0x40;
}

/// Makes every folder under `root` owner-writable so a `TempDir` can delete it.
pub fn make_removable(root: &Path) {
    if let Ok(meta) = fs::symlink_metadata(root) {
        if meta.is_dir() {
            let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o755));
            for child in fs::read_dir(root).unwrap().flatten() {
                make_removable(&child.path());
            }
        }
    }
}

pub use airlock_oci::media::OCI_MANIFEST;

/// A container image to put into a test installer. The registry never parses manifests, so
/// any bytes do; [`ImageSpec::sample`] writes a plausible one by hand.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Upstream registry host.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// Tag.
    pub tag: Option<String>,
    /// Manifest bytes, served verbatim.
    pub manifest: Vec<u8>,
    /// Manifest media type.
    pub media_type: String,
    /// Config blob.
    pub config: Vec<u8>,
    /// A layer that is "already compressed": stored in raw frames.
    pub raw_layer: Vec<u8>,
    /// A compressible layer (an uncompressed tar from a docker archive): stored in zstd frames.
    pub zstd_layer: Vec<u8>,
}

/// `len` bytes of text that compress well.
pub fn compressible(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("layer {seed} line {i}\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

impl ImageSpec {
    /// An image whose content depends on `seed`: a config, a raw layer of `raw_len` noise
    /// bytes and a zstd layer of `zstd_len` text bytes, and an OCI manifest naming them.
    pub fn sample(
        registry: &str,
        repository: &str,
        tag: &str,
        seed: u64,
        raw_len: usize,
        zstd_len: usize,
    ) -> ImageSpec {
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let raw_layer = noise(seed.wrapping_add(100), raw_len);
        let zstd_layer = compressible(seed, zstd_len);
        let desc = |media: &str, b: &[u8]| {
            format!(
                r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
                Sha256Digest::of(b),
                b.len()
            )
        };
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{},{}]}}"#,
            desc(media::OCI_CONFIG, &config),
            desc(media::OCI_LAYER_GZIP, &raw_layer),
            desc(media::OCI_LAYER_TAR, &zstd_layer),
        )
        .into_bytes();
        ImageSpec {
            registry: registry.into(),
            repository: repository.into(),
            tag: Some(tag.into()),
            manifest,
            media_type: OCI_MANIFEST.into(),
            config,
            raw_layer,
            zstd_layer,
        }
    }

    /// Digest of the manifest.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.manifest)
    }

    fn image(&self) -> Image {
        let digest = self.digest();
        Image::new(
            self.registry.clone(),
            self.repository.clone(),
            self.tag.clone(),
            digest,
            vec![ManifestRef {
                digest,
                media_type: self.media_type.clone(),
                platform: Some("linux/amd64".into()),
            }],
            [&self.config, &self.raw_layer, &self.zstd_layer]
                .iter()
                .map(|b| Sha256Digest::of(b))
                .collect(),
        )
        .unwrap()
    }
}

/// An installer (5000 zero bytes as the stub, no files) holding `images`; shared blobs are
/// stored once.
pub fn installer_with_images(images: &[ImageSpec]) -> Vec<u8> {
    let mut blobs: Vec<BlobInput> = Vec::new();
    for spec in images {
        let parts = [
            (&spec.manifest, false, "manifest"),
            (&spec.config, false, "config"),
            (&spec.raw_layer, true, "raw layer"),
            (&spec.zstd_layer, false, "zstd layer"),
        ];
        for (data, precompressed, what) in parts {
            let digest = Sha256Digest::of(data);
            if !data.is_empty() && !blobs.iter().any(|b| b.digest == digest) {
                blobs.push(BlobInput {
                    digest,
                    size: data.len() as u64,
                    precompressed,
                    name: format!("{}/{} {what}", spec.registry, spec.repository),
                    source: Box::new(data.clone()),
                });
            }
        }
    }
    let mut records: Vec<Image> = images.iter().map(ImageSpec::image).collect();
    records.sort_by(|a, b| {
        (&a.registry, &a.repository, &a.tag, a.digest).cmp(&(
            &b.registry,
            &b.repository,
            &b.tag,
            b.digest,
        ))
    });
    let info = BuildInfo {
        name: "images".into(),
        version: "1.0".into(),
        platform: "linux/amd64".into(),
        created: MTIME,
        mtime: MTIME,
        builder: "airlock-stub tests".into(),
    };
    let mut out = std::io::Cursor::new(Vec::new());
    write_installer(
        &mut out,
        &[0u8; 5000],
        &info,
        PayloadContents {
            blobs,
            entries: vec![],
            images: records,
            ..Default::default()
        },
        WriteOptions::default(),
        &|_| {},
    )
    .unwrap();
    out.into_inner()
}
