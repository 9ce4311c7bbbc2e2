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
