//! `fedistill size`: device-aware sizing (measure candidate students on this machine, pick the most accurate one
//! within a latency and memory budget, write its student config), whose flags are [`crate::size::SizeOptions`]'s;
//! [`crate::size`] does the work. The thread count is fixed here, before any computation, because candle reads it
//! once per process.

use crate::size;

/// Checks the budgets, fixes the thread count and runs the sizing.
pub fn run(opts: size::SizeOptions) -> anyhow::Result<()> {
    opts.validate()?;
    // Before any candle work: candle sizes its thread pool from these on first use, and gemm reads
    // RAYON_NUM_THREADS on every product. The flag wins over a value in the environment.
    let t = opts.threads.to_string();
    std::env::set_var("RAYON_NUM_THREADS", &t);
    std::env::set_var("CANDLE_NUM_THREADS", &t);
    size::run(&opts)
}
