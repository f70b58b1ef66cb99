//! The `edgegw` command; everything is in [`edgegw::cli`].

fn main() -> std::process::ExitCode {
    edgegw::cli::main()
}
