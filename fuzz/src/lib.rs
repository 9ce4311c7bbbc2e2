//! Shared inputs of the fuzz targets: a small valid installer (files of every type and three
//! images, in raw and zstd frames) and [`reframe`], which wraps any index JSON in a file whose
//! every checksum is right, so that the fuzzer reaches the index validator and the readers
//! behind it instead of stopping at `index checksum mismatch`.
//!
//! Everything here uses only the public API of `airlock-payload`: the production reader is
//! fuzzed exactly as the stub runs it.

use std::sync::OnceLock;

use airlock_payload::{
    write_installer, BlobInput, BuildInfo, Entry, EntryKind, Header, Image, Installer, ManifestRef,
    PayloadContents, Sha256Digest, Trailer, WriteOptions, TRAILER_LEN,
};
use serde_json::Value;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Incompressible bytes from a seeded xorshift (stored in `raw` frames when precompressed).
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

/// Text that compresses (stored in `zstd` frames).
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(format!("line {seed} {i}\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// One captured image of the base installer.
pub struct FixtureImage {
    /// Upstream registry host.
    pub registry: &'static str,
    /// Repository.
    pub repository: &'static str,
    /// Tag.
    pub tag: &'static str,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Config, a precompressed (raw-frame) layer, a compressible (zstd-frame) layer.
    pub blobs: [Vec<u8>; 3],
}

impl FixtureImage {
    fn new(registry: &'static str, repository: &'static str, tag: &'static str, seed: u64) -> Self {
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let blobs = [config, noise(seed, 300 + seed as usize), text(seed, 2000)];
        let desc = |b: &[u8]| {
            format!(
                r#"{{"digest":"{}","size":{}}}"#,
                Sha256Digest::of(b),
                b.len()
            )
        };
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{},{}]}}"#,
            desc(&blobs[0]),
            desc(&blobs[1]),
            desc(&blobs[2])
        )
        .into_bytes();
        FixtureImage {
            registry,
            repository,
            tag,
            manifest,
            blobs,
        }
    }

    /// Digest of the manifest.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.manifest)
    }
}

/// The base installer and what it holds.
pub struct Fixture {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Its images.
    pub images: Vec<FixtureImage>,
}

/// The base installer (about 7 kB): a 100-byte stub, a dir, a text file, a noise file, an
/// empty file, a symlink, a hardlink and three images, one of them under a `host:port`
/// registry and two sharing a repository name in different namespaces.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let images = vec![
            FixtureImage::new("docker.io", "library/app", "1", 1),
            FixtureImage::new("example.hub", "library/app", "1", 2),
            FixtureImage::new("registry.local:5000", "a/b", "v2", 3),
        ];
        let mut blobs: Vec<BlobInput> = Vec::new();
        let mut add = |data: &[u8], precompressed: bool| {
            let digest = Sha256Digest::of(data);
            if !blobs.iter().any(|b| b.digest == digest) {
                blobs.push(BlobInput {
                    digest,
                    size: data.len() as u64,
                    precompressed,
                    name: "fixture".into(),
                    source: Box::new(data.to_vec()),
                });
            }
            digest
        };
        let file_a = text(9, 500);
        let file_b = noise(9, 200);
        let (da, db) = (add(&file_a, false), add(&file_b, true));
        let mut records = Vec::new();
        for img in &images {
            add(&img.manifest, false);
            add(&img.blobs[0], false);
            add(&img.blobs[1], true);
            add(&img.blobs[2], false);
            let digest = img.digest();
            records.push(
                Image::new(
                    img.registry.into(),
                    img.repository.into(),
                    Some(img.tag.into()),
                    digest,
                    vec![ManifestRef {
                        digest,
                        media_type: OCI_MANIFEST.into(),
                        platform: Some("linux/amd64".into()),
                    }],
                    img.blobs.iter().map(|b| Sha256Digest::of(b)).collect(),
                )
                .expect("a valid image"),
            );
        }
        records.sort_by(|a, b| {
            (&a.registry, &a.repository, &a.tag, a.digest).cmp(&(
                &b.registry,
                &b.repository,
                &b.tag,
                b.digest,
            ))
        });
        let entry = |path: &str, mode, kind| Entry {
            path: path.to_owned().try_into().expect("valid path"),
            mode,
            kind,
        };
        let entries = vec![
            entry("etc", 0o755, EntryKind::Dir),
            entry(
                "etc/a.txt",
                0o644,
                EntryKind::File {
                    size: file_a.len() as u64,
                    digest: da,
                },
            ),
            entry(
                "etc/b.bin",
                0o600,
                EntryKind::File {
                    size: file_b.len() as u64,
                    digest: db,
                },
            ),
            entry(
                "etc/empty",
                0o644,
                EntryKind::File {
                    size: 0,
                    digest: Sha256Digest::empty(),
                },
            ),
            entry(
                "etc/link",
                0o777,
                EntryKind::Symlink {
                    target: "a.txt".into(),
                },
            ),
            entry(
                "etc/twin",
                0o644,
                EntryKind::Hardlink {
                    target: "etc/a.txt".to_owned().try_into().expect("valid path"),
                },
            ),
        ];
        let info = BuildInfo {
            name: "fuzz".into(),
            version: "1".into(),
            platform: "linux/amd64".into(),
            created: 0,
            mtime: 0,
            builder: "airlock-fuzz".into(),
        };
        let mut out = std::io::Cursor::new(Vec::new());
        write_installer(
            &mut out,
            &[0x55; 100],
            &info,
            PayloadContents {
                blobs,
                entries,
                images: records,
            },
            WriteOptions::default(),
            &|_| {},
        )
        .expect("write the base installer");
        Fixture {
            bytes: out.into_inner(),
            images,
        }
    })
}

/// The decompressed index JSON of `installer` (a seed for the `index` target).
pub fn index_json(installer: &[u8]) -> Vec<u8> {
    let inst = Installer::open(installer, None).expect("a valid installer");
    zstd::decode_all(&installer[inst.trailer().index_range()]).expect("the index decodes")
}

/// Wraps `json` as the index of a copy of `base`: the base's stub, frames and meta, then
/// `json` compressed, then a trailer with correct digests and lengths. With `fix`, when
/// `json` parses, every frame's `sha256` is set to the digest of the base bytes it covers
/// (where it lies inside them), the frames region is cut or zero-padded (up to 64 kB) to the
/// frames' total stored length, and the trailer's counts follow the JSON, so that only the
/// index validator and the readers decide.
pub fn reframe(base: &[u8], json: &[u8], fix: bool) -> Vec<u8> {
    let t = Installer::open(base, None)
        .expect("a valid base installer")
        .trailer()
        .to_owned();
    let stub = &base[..t.payload_offset as usize];
    let mut frames = base[t.frames_range()].to_vec();
    let meta = &base[t.meta_range()];
    let mut trailer = t;
    let mut json = json.to_vec();
    if fix {
        if let Ok(mut v) = serde_json::from_slice::<Value>(&json) {
            fix_up(&mut v, &mut frames, &mut trailer);
            json = serde_json::to_vec(&v).expect("a JSON value serializes");
        }
    }
    let index = zstd::bulk::compress(&json, 1).expect("zstd compresses");
    trailer.frames_len = frames.len() as u64;
    trailer.meta_offset = airlock_payload::HEADER_LEN + trailer.frames_len;
    trailer.index_offset = trailer.meta_offset + meta.len() as u64;
    trailer.index_len = index.len() as u64;
    trailer.index_raw_len = json.len() as u64;
    trailer.index_sha256 = Sha256Digest::of(&index);
    let file_len = trailer.payload_offset + trailer.index_offset + trailer.index_len + TRAILER_LEN;
    trailer.file_len = file_len;
    let header = Header {
        file_len,
        trailer_offset: file_len - TRAILER_LEN,
    };
    let mut out = Vec::with_capacity(file_len as usize);
    out.extend_from_slice(stub);
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&frames);
    out.extend_from_slice(meta);
    out.extend_from_slice(&index);
    out.extend_from_slice(&trailer.to_bytes());
    out
}

fn fix_up(v: &mut Value, frames: &mut Vec<u8>, trailer: &mut Trailer) {
    let count = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64)
    };
    trailer.frame_count = count(v, "frames");
    trailer.blob_count = count(v, "blobs");
    trailer.entry_count = count(v, "entries");
    trailer.total_size = v.get("entries").and_then(Value::as_array).map_or(0, |a| {
        a.iter()
            .filter(|e| e.get("type").and_then(Value::as_str) == Some("file"))
            .filter_map(|e| e.get("size").and_then(Value::as_u64))
            .fold(0u64, u64::wrapping_add)
    });
    let Some(list) = v.get_mut("frames").and_then(Value::as_array_mut) else {
        return;
    };
    let mut at = 0u64;
    for f in list.iter_mut() {
        let Some(len) = f.get("stored_len").and_then(Value::as_u64) else {
            continue;
        };
        let end = at.saturating_add(len);
        if end <= 64 << 10 {
            if end as usize > frames.len() {
                frames.resize(end as usize, 0);
            }
            let digest = Sha256Digest::of(&frames[at as usize..end as usize]);
            if let Some(obj) = f.as_object_mut() {
                obj.insert(
                    "sha256".into(),
                    Value::String(digest.to_string().trim_start_matches("sha256:").to_owned()),
                );
            }
        }
        at = end;
    }
    if at <= 64 << 10 {
        frames.resize(at as usize, 0);
    }
}

/// Exercises a loaded payload the way the stub's commands do: verify (deep), read every
/// blob, every raw blob slice, a few ranges, and describe every frame. Panics only on a
/// broken invariant of the reader.
pub fn exercise(payload: &airlock_payload::Payload<'_>) {
    use std::io::Read;
    let report = payload.verify(true, &|_| {});
    assert_eq!(report.frames, payload.index().frames().len());
    for i in 0..payload.index().frames().len() {
        let _ = payload.frame_contents(i);
        let mut out = Vec::new();
        if payload.decode_frame(i, &mut out).is_ok() {
            assert_eq!(out.len() as u64, payload.index().frames()[i].raw_len);
        }
    }
    for blob in payload.index().blobs() {
        let mut out = Vec::new();
        if payload.blob_reader(blob).read_to_end(&mut out).is_ok() {
            assert_eq!(out.len() as u64, blob.size, "blob reader length");
        }
        if let Ok(Some(raw)) = payload.checked_raw_blob(blob) {
            assert_eq!(raw.len() as u64, blob.size, "raw blob length");
        }
        let mut part = Vec::new();
        let (off, len) = (blob.size / 3, blob.size / 2 + 1);
        if payload
            .blob_reader_range(blob, off, len)
            .read_to_end(&mut part)
            .is_ok()
        {
            assert_eq!(part.len() as u64, len.min(blob.size - off), "range length");
        }
    }
    for e in payload.index().entries() {
        assert!(payload.index().entry(e.path.as_str()).is_some());
    }
}
