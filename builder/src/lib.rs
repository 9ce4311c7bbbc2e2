//! The airlock builder: reads `airlock.yaml`, gathers its files, and writes one executable
//! installer (a static stub followed by an `airlock-payload` payload).
//!
//! - [`spec`]: the spec file, parsed into types that cannot hold invalid values; errors carry
//!   `file:line:column`.
//! - [`reference`]: image references, normalised like containerd.
//! - [`discover`]: finds the image references of manifests, Helm charts and image lists.
//! - [`image`]: captures images from OCI layouts, docker-archives and registries, verified
//!   blob by blob.
//! - [`tree`]: turns `files:` into a sorted list of entries (folders, files, symlinks, hard
//!   links).
//! - [`stubcheck`]: checks that a stub is a static ELF executable for the platform.
//! - [`capture`]: `airlock capture`, a pull-through registry that records what a cluster pulls
//!   (its lock file, [`capture::lock`], is a leaf that the spec and the image sources read).
//! - [`sbom`]: the SPDX 2.3 document every build embeds.
//! - [`sign`]: minisign keys and installer signatures (`keygen`, `build --sign`, `sign`).
//! - [`split`]: parts that fit FAT32 (`build --split`, `split`, `join`).
//! - [`build`]: the pipeline, and `inspect` for reading an installer without running it.
//!
//! Imports run one way: [`reference`] → [`spec`] → [`image`] (the sources, a capture folder
//! among them) → [`capture`] (the proxy) → [`build`]; no file imports one above it.
#![deny(missing_docs)]

pub mod build;
pub mod cache;
pub mod capture;
pub mod discover;
pub mod engine;
pub mod image;
pub mod kubeadm;
pub mod progress;
pub mod reference;
pub mod sandbox;
pub mod sbom;
pub mod sign;
pub mod spec;
pub mod split;
pub mod stubcheck;
pub mod tree;
