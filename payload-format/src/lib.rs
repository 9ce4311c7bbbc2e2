//! The airlock installer format: one file = a static stub program + a payload of frames,
//! a meta record, an index and a trailer. `SPEC.md` beside this crate is the byte-level
//! description; this crate is its reference implementation.
//!
//! - [`write_installer`] streams a stub and content into an installer (parallel zstd,
//!   de-duplicated blobs, bounded memory, deterministic output).
//! - [`Installer::open`] checks the trailer of a mapped file in microseconds and explains a
//!   missing one; [`Installer::load_index`] checks and parses the index into a [`Payload`].
//! - [`Meta`] is the record `info` shows; [`Name`] and [`Version`] hold the one rule for an
//!   installer's name and version, which the builder and the installer both apply.
//! - [`Payload`] gives random access to any blob ([`Payload::blob_reader`]), frame-level
//!   parallel decoding ([`Payload::decode_frame`]) and [`Payload::verify`]. Every byte is
//!   checked against a SHA-256 before it is handed out.
//!
//! ```
//! use airlock_payload::*;
//! let content = b"hello".to_vec();
//! let digest = Sha256Digest::of(&content);
//! let entries = vec![Entry {
//!     path: "hello.txt".to_owned().try_into().unwrap(),
//!     mode: 0o644,
//!     kind: EntryKind::File { size: 5, digest },
//! }];
//! let blobs = vec![BlobInput { digest, size: 5, precompressed: false, name: "hello.txt".into(), source: Box::new(content) }];
//! let info = BuildInfo { name: "demo".into(), version: "1".into(), platform: "linux/amd64".into(),
//!     created: 0, mtime: 0, builder: "doc".into() };
//! let mut file = std::io::Cursor::new(Vec::new());
//! write_installer(&mut file, b"#!stub", &info, PayloadContents { blobs, entries, ..Default::default() }, WriteOptions::default(), &|_| {}).unwrap();
//! let bytes = file.into_inner();
//! let installer = Installer::open(&bytes, None).unwrap();
//! assert_eq!(installer.meta().files, 1);
//! let payload = installer.load_index().unwrap();
//! let blob = payload.index().blob(&digest).unwrap();
//! let mut out = String::new();
//! std::io::Read::read_to_string(&mut payload.blob_reader(blob), &mut out).unwrap();
//! assert_eq!(out, "hello");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache;
mod digest;
mod elf;
mod entry;
mod error;
mod image;
mod index;
mod install;
mod layout;
mod meta;
mod parts;
mod reader;
mod signature;
mod summary;
mod writer;

pub use cache::{FrameCache, FrameKey};
pub use digest::{DigestParseError, Sha256Digest};
pub use elf::{
    declared_elf_end, elf_image_end, FirstStage, FIRST_STAGE_NOTE_NAME, FIRST_STAGE_NOTE_TYPE,
    FIRST_STAGE_RECORD_LEN,
};
pub use entry::{Entry, EntryError, EntryKind, EntryPath, PathError, MAX_PATH_LEN};
pub use error::{Error, Result};
pub use image::{
    is_valid_registry, is_valid_repository, is_valid_tag, Image, ImageError, ManifestRef,
};
pub use index::{
    Blob, Codec, Frame, Index, IndexError, SbomRef, MAX_FRAME_RAW, SPDX_JSON_MEDIA_TYPE,
};
pub use install::{
    is_kubernetes_version, ContainerdEngine, Engine, Hook, HookStage, InstallConfig, InstallError,
    K3sEngine, KubeadmEngine, MAX_KUBEADM_CONFIG,
};
pub use layout::{
    align_payload, Header, Trailer, FORMAT_VERSION, HEADER_LEN, HEADER_MAGIC, MIN_FORMAT_VERSION,
    PAYLOAD_ALIGN, TRAILER_END_MAGIC, TRAILER_LEN, TRAILER_MAGIC,
};
pub use meta::{Meta, Name, NameError, Version, VersionError, MAX_LABEL_LEN};
pub use parts::{
    align_part_size, check_lengths, check_total, find_parts, has_parts, part_count, part_path,
    Part, PartError, FAT32_MAX_FILE, FAT32_PART_SIZE, MAX_PARTS, PART_ALIGN,
};
pub use reader::{BlobReader, Installer, Payload, VerifyReport};
pub use signature::{
    SignatureSection, MAX_SIGNATURES, MAX_SIGNATURE_LEN, SIGNATURE_END_MAGIC, SIGNATURE_FOOTER_LEN,
    SIGNATURE_FOOTER_MAGIC, SIGNATURE_MAGIC,
};
pub use summary::{human_bytes, Summary};
pub use writer::{
    encode_frame, write_installer, write_installer_cached, BlobInput, BlobSource, BuildInfo,
    PayloadContents, WriteOptions, WriteSummary, FRAME_SIZE, SOLID_THRESHOLD,
};
