//! The commands this crate runs (`fedistill bench ...`, `demo`, `local`, `quantize`, `compare`, `size`, `tune`),
//! which the binary puts in its command tree and dispatches here. Their flags are the options structs of the
//! entry points themselves (each derives `clap::Args`); a dispatch fills in what comes from the process rather than
//! a flag (the command line a report records, the binary a suite starts). `demo` alone keeps a flag struct of its
//! own ([`demo::DemoArgs`]): its options are the resolved, typed form `bench domains` also builds.

pub mod bench;
pub mod demo;
pub mod local;
pub mod size;
pub mod student;
pub mod tune;

/// `fedistill ...` (this process's command line) as the reports record it.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("fedistill {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::bench::BenchCommand;

    /// The commands as the binary mounts them.
    #[derive(Debug, Parser)]
    #[allow(clippy::large_enum_variant)] // parsed once per test
    enum Cli {
        #[command(subcommand)]
        Bench(BenchCommand),
        Tune(crate::tune::TuneOptions),
        Compare(crate::student::CompareOptions),
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("fedistill").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn flags_land_in_the_options_structs() {
        let Cli::Tune(t) = parse(&["tune"]) else { panic!("tune") };
        assert!(t.confirm, "no --no-confirm: confirm");
        assert_eq!((t.participants, t.alpha, t.seed, t.eta), (3, 0.5, 1, 3));
        let Cli::Tune(t) = parse(&["tune", "--no-confirm", "--alpha", "-1"]) else {
            panic!("tune")
        };
        assert!(!t.confirm);
        assert_eq!(t.alpha, -1.0);

        let Cli::Bench(BenchCommand::Stages(s)) = parse(&["bench", "stages", "--quick", "--seeds", "4,5"]) else {
            panic!("stages")
        };
        assert!(s.federated_half().is_none());
        let Cli::Bench(BenchCommand::Stages(s)) = parse(&["bench", "stages", "--federated", "--datasets", "digits"])
        else {
            panic!("stages")
        };
        let p = s.federated_half().expect("--federated");
        assert_eq!(p.datasets, ["digits"]);
        assert_eq!((p.participants, p.rounds), (None, None));

        let Cli::Bench(BenchCommand::Accuracy(a)) = parse(&["bench", "accuracy", "--quick", "--rules", "mean,median"])
        else {
            panic!("accuracy")
        };
        assert!(a.common.quick);
        assert_eq!(a.rules, ["mean", "median"]);
        assert_eq!(a.section, "accuracy");

        let Cli::Bench(BenchCommand::Transport(t)) = parse(&["bench", "transport"]) else {
            panic!("transport")
        };
        assert_eq!(t.sizes_mb, [1, 10, 100]);

        let Cli::Compare(c) = parse(&["compare", "a.gguf", "b.gguf", "--dataset", "digits", "--seed", "3"]) else {
            panic!("compare")
        };
        assert_eq!((c.split.seed, c.split.test_fraction, c.shadow_batch), (3, 0.2, 64));
    }
}
