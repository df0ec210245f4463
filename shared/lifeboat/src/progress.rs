//! Progress bars for long work (indicatif), drawn on stderr only when it is a terminal, so
//! scripts and logs get clean output.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Bar(ProgressBar);

impl Bar {
    pub fn bytes(label: &str) -> Bar {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{prefix} {bytes} ({bytes_per_sec}) {wide_bar} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_prefix(label.to_string());
        Bar(pb)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl engine::Progress for Bar {
    fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn status(&self, msg: &str) {
        self.0.set_message(msg.to_string());
    }
}
