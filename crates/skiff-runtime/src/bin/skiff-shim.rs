//! Stand-alone container shim for the `oci` runtime (tests; the `skiff` binary has `skiff shim`).

fn main() {
    std::process::exit(skiff_runtime::oci::shim_main(std::env::args_os().skip(1)));
}
