//! Command-line interface: clap types and their conversion into validated
//! library configurations. Nothing below this module sees clap types.

pub mod nat;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes, documented in `--help`.
pub const EXIT_HELP: &str = "Exit codes:
  0    the command completed (for `nat`: discovery completed, whatever the NAT)
  1    the operation failed (for `nat`: no STUN server answered)
  2    usage error (bad or missing arguments)
  130  interrupted (Ctrl-C)";

/// plexus: direct UDP paths between machines behind NAT, through rendezvous channels you control.
#[derive(Debug, Parser)]
#[command(name = "plexus", version, after_help = EXIT_HELP)]
pub struct Cli {
    /// Log level for messages on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
    /// Also append log messages to this file.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover this host's NAT behaviour (RFC 5780) and whether it can take part in a punch.
    #[command(after_help = nat::AFTER_HELP)]
    Nat(nat::NatArgs),
}
