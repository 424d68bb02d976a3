//! `herd`: argument parsing and exit codes; the work is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = herd_agent::cli::Cli::parse();
    herd_agent::cli::init_logging(cli.verbose);
    match herd_agent::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
