//! The `lightningstream` binary: parse the command line (accepting the Go CLI's forms) and hand
//! over to the commands.

use std::process::ExitCode;

use argh::FromArgs;
use lightningstream::cli::{Cli, normalize_args};
use lightningstream::commands;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .first()
        .cloned()
        .unwrap_or_else(|| "lightningstream".into());
    let args = match normalize_args(&args[1.min(args.len())..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = std::path::Path::new(&program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("lightningstream");
    match Cli::from_args(&[name], &refs) {
        Ok(cli) => commands::run(cli),
        Err(early) => {
            if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", early.output);
                ExitCode::FAILURE
            }
        }
    }
}
