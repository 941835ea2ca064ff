//! A progress bar on stderr for long jobs.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(label: &str, total: usize) -> Self {
        Self::with_template(label, total as u64, "{pos}/{len}")
    }

    /// A bar over `total` bytes (a file read through).
    pub fn bytes(label: &str, total: u64) -> Self {
        Self::with_template(label, total, "{bytes}/{total_bytes}")
    }

    fn with_template(label: &str, total: u64, counts: &str) -> Self {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix:>18}} [{{bar:30}}] {counts} {{elapsed_precise}} eta {{eta}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Progress { bar }
    }

    pub fn set(&mut self, position: u64) {
        self.bar.set_position(position);
    }

    pub fn tick(&mut self) {
        self.bar.inc(1);
    }

    pub fn message(&mut self, msg: String) {
        self.bar.set_message(msg);
    }

    pub fn finish(&mut self) {
        self.bar.finish();
    }
}
