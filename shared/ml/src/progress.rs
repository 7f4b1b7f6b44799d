//! Progress reporting for long commands: an indicatif bar on a terminal, plain lines otherwise.
//!
//! One [`Progress`] shows one phase at a time (`start`, `advance`, `finish`). A long command with an outer
//! grid (a bench suite's runs) and inner phases (each run's teachers and rounds) keeps a sink for the grid
//! and hands [`Progress::child`] to the inner loops: on a terminal their bars share one display (the child's
//! bar is cleared when its phase ends), otherwise both print plain lines. Everything goes to stderr, so the
//! results a command prints on stdout stay exactly as they are.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing is printed (library callers, tests).
    Hidden,
    /// One plain line per step on stderr (logs, pipes, CI).
    Lines,
    /// An indicatif progress bar on stderr (interactive terminals).
    Bar,
}

/// A progress sink passed to long loops; interior mutability so loops take `&Progress`.
pub struct Progress {
    mode: ProgressMode,
    bar: Mutex<Option<ProgressBar>>,
    /// The display every bar of this sink and of its children is drawn in (bar mode only).
    multi: Option<MultiProgress>,
    /// A child's bar is cleared when its phase finishes (the parent's line stays).
    transient: bool,
}

impl Progress {
    fn new(mode: ProgressMode, multi: Option<MultiProgress>, transient: bool) -> Self {
        let multi = match mode {
            ProgressMode::Bar => Some(multi.unwrap_or_default()),
            _ => None,
        };
        Progress {
            mode,
            bar: Mutex::new(None),
            multi,
            transient,
        }
    }

    /// A sink that prints nothing.
    pub fn hidden() -> Self {
        Progress::new(ProgressMode::Hidden, None, false)
    }

    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn auto() -> Self {
        let mode = if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        };
        Progress::new(mode, None, false)
    }

    /// A sink with an explicit mode.
    pub fn with_mode(mode: ProgressMode) -> Self {
        Progress::new(mode, None, false)
    }

    /// A sink for an inner loop, in the same mode: on a terminal its bar is drawn below this sink's bar and
    /// cleared when its phase finishes; otherwise it prints its own plain lines.
    pub fn child(&self) -> Progress {
        Progress::new(self.mode, self.multi.clone(), true)
    }

    /// The mode in use.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// Starts a phase of `total` units (epochs, rounds, runs) named `label`.
    pub fn start(&self, label: &str, total: u64) {
        self.start_with(label, total, "steps", "{prefix:>10} [{bar:30}] {pos}/{len} {msg}");
    }

    /// Starts a phase of `total` bytes (a transfer) named `label`: on a terminal the bar shows bytes in
    /// KiB/MiB and the rate; plain lines give byte counts, so a caller reporting every chunk should report
    /// only every tenth or so off a terminal.
    pub fn start_bytes(&self, label: &str, total: u64) {
        self.start_with(
            label,
            total,
            "bytes",
            "{prefix:>10} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
        );
    }

    fn start_with(&self, label: &str, total: u64, unit: &str, template: &str) {
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Lines => eprintln!("{label}: starting ({total} {unit})"),
            ProgressMode::Bar => {
                let bar = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(label.to_string());
                let bar = match &self.multi {
                    Some(m) => m.add(bar),
                    None => bar,
                };
                if let Ok(mut b) = self.bar.lock() {
                    if let Some(old) = b.replace(bar) {
                        self.close(old, None);
                    }
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
                        self.close(bar, Some(msg));
                    }
                }
            }
        }
    }

    /// A line that stays in the output in every mode but hidden: printed above the bars on a terminal, on
    /// stderr otherwise.
    pub fn println(&self, line: &str) {
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Lines => eprintln!("{line}"),
            ProgressMode::Bar => {
                let printed = self.multi.as_ref().is_some_and(|m| m.println(line).is_ok());
                if !printed {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Runs `f` (which prints to stdout or stderr) with the bars taken off the terminal, then redraws them;
    /// in the other modes just runs `f`.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    fn close(&self, bar: ProgressBar, msg: Option<&str>) {
        if self.transient {
            bar.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(&bar);
            }
        } else {
            match msg {
                Some(msg) => bar.finish_with_message(msg.to_string()),
                None => bar.abandon(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_share_the_mode_and_hidden_sinks_stay_silent() {
        for mode in [ProgressMode::Hidden, ProgressMode::Lines, ProgressMode::Bar] {
            let p = Progress::with_mode(mode);
            let c = p.child();
            assert_eq!(c.mode(), mode);
            assert_eq!(p.multi.is_some(), mode == ProgressMode::Bar);
            // Nested phases, a replaced phase and stray calls must never panic.
            p.start("grid", 2);
            c.start("inner", 3);
            c.advance("inner", 1, 3, "x");
            c.start("inner2", 1);
            c.finish("inner2", "ok");
            c.finish("inner2", "again");
            p.advance("grid", 1, 2, "y");
            p.println("a line");
            let t = p.child();
            t.start_bytes("transfer", 1 << 20);
            t.advance("transfer", 1 << 19, 1 << 20, "bytes (50%)");
            t.finish("transfer", "verified");
            assert_eq!(p.suspend(|| 7), 7);
            p.finish("grid", "done");
        }
    }
}
