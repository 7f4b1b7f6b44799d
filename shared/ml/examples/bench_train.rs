//! The training benchmark of `fedistill bench train` without building the whole binary:
//! `cargo run --release -p fedistill-ml --example bench_train [-- --quick]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let ds = fedistill_data::load("mnist-10k", &fedistill_data::LoadOptions::default())?;
    let bc = if quick {
        fedistill_ml::bench::BenchConfig::quick()
    } else {
        fedistill_ml::bench::BenchConfig::full()
    };
    for l in fedistill_ml::bench::bench_train(&ds.features, &ds.labels, ds.n, ds.dim, ds.num_classes, &bc)? {
        println!(
            "{:<36} plain {:>8.0}/s fused {:>8.0}/s speed-up {:.2}x",
            l.workload, l.plain_samples_per_s, l.fused_samples_per_s, l.speedup
        );
    }
    Ok(())
}
