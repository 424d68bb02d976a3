//! Test-only entry for the per-pod monitor (the real `herd monitor`
//! subcommand calls the same function).

fn main() {
    std::process::exit(herd_runtime::monitor::main_from_args(
        std::env::args_os().skip(1),
    ));
}
