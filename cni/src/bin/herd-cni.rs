//! The `herd-cni` CNI plugin binary; all logic is in `herd_cni::plugin`.

fn main() {
    std::process::exit(herd_cni::plugin::main());
}
