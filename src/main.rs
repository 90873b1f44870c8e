use std::process::ExitCode;

fn main() -> ExitCode {
    rmach::cli::main()
}
