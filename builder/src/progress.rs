//! Progress bars on stderr, drawn only when stderr is a terminal and not silenced.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One phase's bar; a no-op when hidden.
pub struct Progress(ProgressBar);

impl Progress {
    /// A byte-counting bar labelled `phase` with `total` bytes, shown only if `visible`.
    pub fn bytes(visible: bool, phase: &str, total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_owned());
        Progress(bar)
    }

    /// Sets the position.
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Finishes and clears the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Bars drawn together, one per image being captured.
pub struct MultiBars {
    multi: indicatif::MultiProgress,
}

impl MultiBars {
    /// A set of bars on stderr, shown only if `visible`.
    pub fn new(visible: bool) -> Self {
        MultiBars {
            multi: indicatif::MultiProgress::with_draw_target(if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            }),
        }
    }

    /// A new bar for `image`; its total grows as manifests name more blobs.
    pub fn image(&self, image: &str) -> ImageBar {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(image.to_owned());
        ImageBar(bar)
    }
}

/// One image's bar: bytes verified or downloaded out of the bytes known so far.
pub struct ImageBar(ProgressBar);

impl ImageBar {
    /// A bar that draws nothing (tests, library use).
    pub fn hidden() -> Self {
        ImageBar(ProgressBar::hidden())
    }

    /// Adds `n` bytes to the total.
    pub fn add_total(&self, n: u64) {
        self.0.inc_length(n);
    }

    /// Adds `n` bytes done.
    pub fn add_done(&self, n: u64) {
        self.0.inc(n);
    }

    /// Finishes and clears the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
