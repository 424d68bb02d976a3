//! `herd`: argument parsing and exit codes; the work is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The per-pod monitor is this binary re-executed (`herd monitor
    // --pod-dir DIR`). It must stay small: dispatch before clap, logging or
    // any runtime is set up.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "monitor") {
        let code = herd_runtime::monitor::main_from_args(args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
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
