//! The `plexus` command. Exit codes: 0 success, 1 the operation failed, 2 usage error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Direct UDP paths between machines behind NAT, through rendezvous channels you control.
#[derive(Debug, Parser)]
#[command(name = "plexus", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create keys and S/MIME certificates for rendezvous messages.
    Cert(cli::cert::CertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Cert(args) => cli::cert::run_cert(args, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus: {e}");
            ExitCode::from(1)
        }
    }
}
