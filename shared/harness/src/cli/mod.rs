//! The clap flags of the commands this crate runs (`fedistill bench ...`, `demo`, `local`, `quantize`,
//! `compare`, `size`, `tune`), each converted to the plain options struct of its entry point; the binary puts
//! them in its command tree and dispatches.

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
