//! The experiment and benchmark harness behind `fedistill bench` and `fedistill demo`: in-process federated
//! experiments ([`experiment`], with the real signed messages carried by [`exchange`]), one module per bench
//! suite, the local demo federation of real processes ([`demo`]), the one-machine pipeline of `fedistill local`
//! ([`local`]), the student tools of `fedistill quantize` and `fedistill compare` ([`student`]), the knob search of
//! `fedistill tune` ([`tune`]), and the JSON /
//! Markdown / PNG / SVG report writer ([`report`]).
//!
//! Each suite's entry point takes its options struct and prints its progress and results as the command does;
//! that struct derives `clap::Args` and is the command's flags, which [`cli`] dispatches (the binary only puts
//! them in its command tree; `demo` alone has a separate flag struct, resolved there). Suites that start processes
//! of the `fedistill` binary (the scale coordinator, the demo's nodes, `bench load`'s `data check`) take its path
//! in their options, which the dispatch fills in. [`datasplit`]
//! writes the files of `fedistill data split`.
//! Errors are `anyhow`: every caller is a command that reports them and exits.

pub mod accuracy;
pub mod attack;
pub mod cli;
pub mod communication;
pub mod datasplit;
pub mod demo;
pub mod domains;
pub mod exchange;
pub mod experiment;
pub mod files;
pub mod headline;
pub mod load;
pub mod local;
pub mod personalize;
pub mod quantize;
pub mod report;
pub mod robust;
pub mod routing;
pub mod scale;
pub mod size;
pub mod stages;
pub mod student;
pub mod train;
pub mod transport;
pub mod tune;
