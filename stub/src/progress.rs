//! Progress bars on stderr and human-readable sizes.
//!
//! Bars draw only when stderr is a terminal (indicatif hides itself otherwise) and never
//! with `--quiet`; library functions take a [`ProgressBar`] so tests pass a hidden one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar of `total` bytes labelled `label`, or a hidden one when `quiet`.
pub fn bytes_bar(total: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_bars_are_hidden() {
        assert!(bytes_bar(10, "x", true).is_hidden());
    }
}
