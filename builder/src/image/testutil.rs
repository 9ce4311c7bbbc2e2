//! Tiny OCI layouts and docker-archives written by hand for the image tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use airlock_payload::Sha256Digest;
use serde_json::{json, Value};

use super::media::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST};

/// A tar holding `files` (fixed mtimes and owners).
pub fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(315_532_800);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `bytes` gzip-compressed (deterministic: no name, no mtime).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A descriptor of something written to a layout.
#[derive(Debug, Clone)]
pub struct Desc {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Sha256Digest,
    /// Size.
    pub size: u64,
    /// Config digest (manifests).
    pub config: Option<Sha256Digest>,
    /// Layer digests (manifests).
    pub layers: Vec<Sha256Digest>,
}

impl Desc {
    /// As JSON, with an optional platform.
    pub fn json(&self, platform: Option<(&str, &str)>) -> Value {
        let mut v = json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size});
        if let Some((os, arch)) = platform {
            v["platform"] = json!({"os": os, "architecture": arch});
        }
        v
    }
}

/// An OCI layout being written.
pub struct Layout {
    /// Its folder.
    pub dir: PathBuf,
    entries: Vec<Value>,
}

impl Layout {
    /// An empty layout in `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let l = Layout {
            dir: dir.to_owned(),
            entries: Vec::new(),
        };
        l.write_index();
        l
    }

    /// Writes a blob; returns its digest.
    pub fn blob(&self, bytes: &[u8]) -> Sha256Digest {
        let d = Sha256Digest::of(bytes);
        std::fs::write(self.blob_path(d), bytes).unwrap();
        d
    }

    /// Where blob `d` is.
    pub fn blob_path(&self, d: Sha256Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// An image for `arch` with the given layers (uncompressed tar content); `gzip_layers`
    /// stores them gzip-compressed.
    pub fn manifest(&self, arch: &str, layers: &[Vec<u8>], gzip_layers: bool) -> Desc {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut digests = Vec::new();
        for l in layers {
            diff_ids.push(Sha256Digest::of(l).to_string());
            let (stored, mt) = if gzip_layers {
                (gzip(l), OCI_LAYER_GZIP)
            } else {
                (l.clone(), OCI_LAYER_TAR)
            };
            let d = self.blob(&stored);
            digests.push(d);
            descs.push(json!({"mediaType": mt, "digest": d.to_string(), "size": stored.len()}));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {}
        }))
        .unwrap();
        let cd = self.blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
            "layers": descs
        }))
        .unwrap();
        let md = self.blob(&manifest);
        Desc {
            media_type: OCI_MANIFEST.into(),
            digest: md,
            size: manifest.len() as u64,
            config: Some(cd),
            layers: digests,
        }
    }

    /// An index over `manifests` with their platforms.
    pub fn index(&self, manifests: &[(&Desc, &str)]) -> Desc {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(d, arch)| d.json(Some(("linux", arch))))
            .collect();
        let bytes = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        )
        .unwrap();
        let d = self.blob(&bytes);
        Desc {
            media_type: OCI_INDEX.into(),
            digest: d,
            size: bytes.len() as u64,
            config: None,
            layers: Vec::new(),
        }
    }

    /// Tags `desc` in `index.json`, with extra annotations.
    pub fn tag(&mut self, desc: &Desc, tag: &str, extra: &[(&str, &str)]) {
        let mut v = desc.json(None);
        let mut ann = serde_json::Map::new();
        ann.insert(
            "org.opencontainers.image.ref.name".into(),
            Value::String(tag.into()),
        );
        for (k, val) in extra {
            ann.insert((*k).into(), Value::String((*val).into()));
        }
        v["annotations"] = Value::Object(ann);
        self.entries.push(v);
        self.write_index();
    }

    fn write_index(&self) {
        let bytes = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries}),
        )
        .unwrap();
        std::fs::write(self.dir.join("index.json"), bytes).unwrap();
    }

    /// The layout as a tar (docker 25+ `docker save`), members sorted.
    pub fn to_tar(&self, out: &Path) {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for name in ["oci-layout", "index.json"] {
            files.push((name.into(), std::fs::read(self.dir.join(name)).unwrap()));
        }
        let mut blobs: Vec<_> = std::fs::read_dir(self.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        blobs.sort();
        for b in blobs {
            files.push((
                format!("blobs/sha256/{b}"),
                std::fs::read(self.dir.join("blobs/sha256").join(&b)).unwrap(),
            ));
        }
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        std::fs::write(out, tar_bytes(&refs)).unwrap();
    }
}

/// Layer content: a tar with one file.
pub fn layer(name: &str, content: &[u8]) -> Vec<u8> {
    tar_bytes(&[(name, content)])
}
