//! Progress reporting for long training loops: an indicatif bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing is printed (library callers, tests).
    Hidden,
    /// One plain line per epoch on stderr (logs, pipes).
    Lines,
    /// An indicatif progress bar on stderr (interactive terminals).
    Bar,
}

/// A progress sink passed to training loops; interior mutability so loops take `&Progress`.
pub struct Progress {
    mode: ProgressMode,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    /// A sink that prints nothing.
    pub fn hidden() -> Self {
        Progress {
            mode: ProgressMode::Hidden,
            bar: Mutex::new(None),
        }
    }

    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn auto() -> Self {
        let mode = if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        };
        Progress {
            mode,
            bar: Mutex::new(None),
        }
    }

    /// A sink with an explicit mode.
    pub fn with_mode(mode: ProgressMode) -> Self {
        Progress {
            mode,
            bar: Mutex::new(None),
        }
    }

    /// The mode in use.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// Starts a phase of `total` units (epochs) named `label`.
    pub fn start(&self, label: &str, total: u64) {
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Lines => eprintln!("{label}: starting ({total} steps)"),
            ProgressMode::Bar => {
                let bar = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}") {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(label.to_string());
                if let Ok(mut b) = self.bar.lock() {
                    *b = Some(bar);
                }
            }
        }
    }

    /// Reports one finished unit with a status message.
    pub fn advance(&self, label: &str, pos: u64, total: u64, msg: &str) {
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Lines => eprintln!("{label}: {pos}/{total} {msg}"),
            ProgressMode::Bar => {
                if let Ok(b) = self.bar.lock() {
                    if let Some(bar) = b.as_ref() {
                        bar.set_position(pos);
                        bar.set_message(msg.to_string());
                    }
                }
            }
        }
    }

    /// Ends the current phase.
    pub fn finish(&self, label: &str, msg: &str) {
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Lines => eprintln!("{label}: done {msg}"),
            ProgressMode::Bar => {
                if let Ok(mut b) = self.bar.lock() {
                    if let Some(bar) = b.take() {
                        bar.finish_with_message(msg.to_string());
                    }
                }
            }
        }
    }
}
