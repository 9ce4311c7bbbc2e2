//! `airlock-stub`: parse the command line, run it, print the error chain, pick the exit code.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use airlock_stub::cli::Cli;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "installer".into());
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = airlock_stub::commands::run(&cli, &program, &mut out)
        .and_then(|()| out.flush().map_err(airlock_stub::Error::Output));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let code = if e.is_corrupt() { 3 } else { 1 };
            eprintln!("error: {:#}", anyhow::Error::new(e));
            ExitCode::from(code)
        }
    }
}

/// Logs go to stderr: warnings by default, debug with `-v`, errors only with `-q`;
/// `RUST_LOG` wins when set.
fn init_logging(cli: &Cli) {
    let default = if cli.verbose {
        "debug"
    } else if cli.quiet {
        "error"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .init();
}
