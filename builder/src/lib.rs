//! The airlock builder: reads `airlock.yaml`, gathers its files, and writes one executable
//! installer (a static stub followed by an `airlock-payload` payload).
//!
//! - [`spec`]: the spec file, parsed into types that cannot hold invalid values; errors carry
//!   `file:line:column`.
//! - [`tree`]: turns `files:` into a sorted list of entries (folders, files, symlinks, hard
//!   links).
//! - [`stubcheck`]: checks that a stub is a static ELF executable for the platform.
//! - [`build`]: the pipeline, and `inspect` for reading an installer without running it.
#![deny(missing_docs)]

pub mod build;
pub mod progress;
pub mod spec;
pub mod stubcheck;
pub mod tree;
