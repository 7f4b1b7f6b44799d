//! `fedistill tune`: the knob search (successive halving over the teacher's and the federation's knobs, in a
//! federation simulated on the public set), whose flags are [`crate::tune::TuneOptions`]'s; [`crate::tune`] does
//! the work.

use crate::tune;

/// Runs the search, with the command line its report records.
pub fn run(mut opts: tune::TuneOptions) -> anyhow::Result<()> {
    opts.command = super::command_line();
    tune::run(&opts).map(|_| ())
}
