//! `fedistill local`: the one-machine experiment (teacher on the private part, student distilled on the public
//! part, both evaluated on the test set), whose flags are [`crate::local::LocalRunOptions`]'s; [`crate::local`]
//! runs it, prints the table and writes the JSON report (see docs/ml.md).

use crate::local;

/// Runs the experiment.
pub fn run(args: local::LocalRunOptions) -> anyhow::Result<()> {
    local::run(&args)
}
