//! `herd-monitor --pod-dir DIR [--ready-fd N]`: the per-pod monitor as its
//! own small binary (`herd monitor` runs the same code). `--version` prints
//! the monitor protocol this binary speaks, which the agent checks before
//! using it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && args[0] == "--version" {
        println!("{}", herd_monitor::monitor::version_line());
        return ExitCode::SUCCESS;
    }
    let code = herd_monitor::monitor::main_from_args(args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
