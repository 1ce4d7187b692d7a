//! `amvm`: the command-line front end. Parsing lives here; the work lives in `amvm_host`.

use std::process::ExitCode;

fn main() -> ExitCode {
    amvm_host::cli::main()
}
