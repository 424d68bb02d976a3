//! `herd`: argument parsing and exit codes; the work is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The per-pod monitor is this binary re-executed (`herd monitor
    // --pod-dir DIR`). It must stay small: dispatch before clap, logging or
    // any runtime is set up.
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(a) if a == "monitor" => {
            let code = herd_runtime::monitor::main_from_args(args);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        // containerd's shim runs this binary as a task's logger
        // (`binary:///…/herd?containerd-logger=<dir>`).
        Some(a) if a == "containerd-logger" => {
            let Some(dir) = args.next() else {
                eprintln!("herd containerd-logger: missing the container dir");
                return ExitCode::FAILURE;
            };
            return match herd_runtime::containerd::logger::run(std::path::Path::new(&dir)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herd containerd-logger: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
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
