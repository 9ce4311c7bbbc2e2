//! The program every airlock installer *is*: `./demo.run` = this stub + a payload.
//!
//! The stub opens its own executable ([`selfexe`]), maps it read-only, checks the payload
//! trailer with `airlock-payload` and runs one command:
//!
//! - a bare run prints a summary and usage ([`info::write_summary`]);
//! - `info` shows the meta record and format facts without loading the index ([`info`]);
//! - `list` prints every entry ([`list`]);
//! - `verify` checks every byte against its digest, in parallel ([`verify`]);
//! - `extract` lays files out through a staging folder, atomically ([`extract`]);
//! - `sbom` prints the SPDX document the build embedded ([`sbom`]);
//! - `verify --key`, `signature export` and the trusted-keys policy check minisign
//!   signatures ([`signature`]);
//! - `registry serve` serves the captured images as a read-only OCI registry, straight from
//!   the mapped file ([`registry`]);
//! - `deploy` and `undeploy` install a whole site over SSH with one upload ([`deploy`]).
//!
//! Library functions take the mapped bytes and paths, so tests drive them with installers
//! built in memory; `main.rs` only parses the command line, calls [`commands::run`] and maps
//! errors to exit codes (0 ok, 1 error, 2 usage, 3 corrupt or truncated installer, see
//! [`Error::is_corrupt`]). The OS seam (free space, `O_NOFOLLOW` opens) is [`sys`].
//!
//! ```
//! use airlock_payload::*;
//! use airlock_stub::extract::{extract, ExtractOptions};
//!
//! // An installer built in memory: any bytes can stand in for the stub.
//! let content = b"hello\n".to_vec();
//! let digest = Sha256Digest::of(&content);
//! let entries = vec![
//!     Entry { path: "etc".to_owned().try_into()?, mode: 0o755, kind: EntryKind::Dir },
//!     Entry { path: "etc/motd".to_owned().try_into()?, mode: 0o644, kind: EntryKind::File { size: 6, digest } },
//! ];
//! let blobs = vec![BlobInput { digest, size: 6, precompressed: false, name: "etc/motd".into(), source: Box::new(content) }];
//! let info = BuildInfo { name: "demo".into(), version: "1".into(), platform: "linux/amd64".into(),
//!     created: 0, mtime: 0, builder: "doc".into() };
//! let mut file = std::io::Cursor::new(Vec::new());
//! write_installer(&mut file, &[0; 100], &info, PayloadContents { blobs, entries, ..Default::default() }, WriteOptions::default(), &|_| {})?;
//! let bytes = file.into_inner();
//!
//! let installer = Installer::open(&bytes, None)?;
//! let payload = installer.load_index()?;
//! let dir = tempfile::tempdir()?;
//! let target = dir.path().join("out");
//! let bar = indicatif::ProgressBar::hidden();
//! let opts = ExtractOptions { target: &target, paths: &[], space: &airlock_stub::sys::Statvfs, bar: &bar, release: &|_| {} };
//! let summary = extract(&installer, &payload, &opts)?;
//! assert_eq!(summary.files, 1);
//! assert_eq!(std::fs::read(target.join("etc/motd"))?, b"hello\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod copy;
pub mod deploy;
mod error;
pub mod extract;
pub mod info;
pub mod install;
pub mod intercept;
pub mod list;
pub mod progress;
pub mod registry;
pub mod sbom;
pub mod selfexe;
pub mod signature;
pub mod sys;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
