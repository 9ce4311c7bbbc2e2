//! Capturing every `images:` entry: several at once, each from its own source, one progress
//! bar per image.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::blob::CapturedImage;
use super::error::{Error, ErrorKind};
use super::registry::{self, RegistryOptions};
use super::{archive, capture, layout};
use crate::progress::{ImageBar, MultiBars};
use crate::spec::{ImageSource, ImageSpec, Platform};

/// What [`capture_all`] needs besides the images.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The platform whose manifests are kept.
    pub platform: Platform,
    /// Registry pulls: mirrors, cache, credentials.
    pub registry: RegistryOptions,
    /// Draw progress bars.
    pub progress: bool,
    /// Images captured at once.
    pub parallel: usize,
}

/// Captures every image, several at once; the result is in spec order. The first failure
/// (in spec order) is returned; images not started yet when one fails are skipped.
pub fn capture_all(
    specs: &[ImageSpec],
    options: &CaptureOptions,
) -> Result<Vec<CapturedImage>, Error> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut names = HashSet::new();
    for s in specs {
        if s.reference.tag().is_some()
            && !names.insert((
                s.reference.registry(),
                s.reference.repository(),
                s.reference.tag(),
            ))
        {
            return Err(Error {
                image: s.reference.to_string(),
                kind: ErrorKind::Duplicate,
            });
        }
    }
    let needs_registry = specs
        .iter()
        .any(|s| matches!(s.from, None | Some(ImageSource::Registry(_))));
    let puller = if needs_registry {
        Some(
            registry::Puller::new(&options.registry).map_err(|kind| Error {
                image: specs[0].reference.to_string(),
                kind,
            })?,
        )
    } else {
        None
    };
    let bars = MultiBars::new(options.progress);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<CapturedImage, Error>>>> =
        specs.iter().map(|_| Mutex::new(None)).collect();
    let workers = options.parallel.clamp(1, specs.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= specs.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let spec = &specs[i];
                let bar = bars.image(&spec.reference.to_string());
                let result =
                    capture_one(spec, options, puller.as_ref(), &bar).map_err(|kind| Error {
                        image: spec.reference.to_string(),
                        kind,
                    });
                bar.finish();
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                *results[i].lock().expect("no panics while locked") = Some(result);
            });
        }
    });
    let mut out = Vec::with_capacity(specs.len());
    for r in results {
        match r.into_inner().expect("no panics while locked") {
            Some(Ok(image)) => out.push(image),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}

/// Captures one image from its source.
pub fn capture_one(
    spec: &ImageSpec,
    options: &CaptureOptions,
    puller: Option<&registry::Puller>,
    bar: &ImageBar,
) -> Result<CapturedImage, ErrorKind> {
    let served = &spec.reference;
    let platform = &options.platform;
    match &spec.from {
        Some(ImageSource::OciLayout { dir, tag }) => {
            let tag = tag.clone().or_else(|| served.tag().map(str::to_owned));
            layout::capture(dir, tag.as_deref(), served, platform, bar)
        }
        Some(ImageSource::DockerArchive { file, reference }) => {
            archive::capture(file, reference.as_ref(), served, platform, bar)
        }
        Some(ImageSource::Capture { dir }) => capture::capture(dir, served, platform, bar),
        Some(ImageSource::Registry(pull)) => {
            let puller = puller.expect("a puller exists when an image needs one");
            puller.capture(pull, served, platform, bar)
        }
        None => {
            let puller = puller.expect("a puller exists when an image needs one");
            puller.capture(served, served, platform, bar)
        }
    }
}
