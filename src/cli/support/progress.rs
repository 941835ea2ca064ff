//! A progress bar on stderr for long jobs.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(label: &str, total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>18} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Progress { bar }
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
