//! Command-line interface: clap types and their conversion into validated
//! library configurations. Nothing below this module sees clap types.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{cert, connect, docs, nat};

/// Exit codes, documented in `--help`.
pub const EXIT_HELP: &str = "Exit codes:
  0    the command completed (for `nat`: discovery completed, whatever the NAT)
  1    the operation failed (no STUN answer, NAT refused, timeout, bad message, executor failed)
  2    usage error (bad or missing arguments, invalid profile)
  130  interrupted (Ctrl-C)

Settings, lowest precedence first: built-in defaults < profile (--profile) <
environment (PLEXUS_BIND, PLEXUS_STUN, PLEXUS_PUNCH_HOPS, PLEXUS_EMAIL_PASSWORD) <
command-line flags.

The original tool's flat command line also works:
  plexus --accept --host-id ID --peer-id ID --email-smtps HOST:PORT ... (accept)
  plexus --host-id ID --peer-id ID --email-smtps HOST:PORT ...          (invite)";

/// plexus: direct UDP paths between machines behind NAT, through rendezvous channels you control.
#[derive(Debug, Parser)]
#[command(name = "plexus", version, after_help = EXIT_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Log level for messages on stderr (error, warn, info, debug, trace)
    /// [default: info for invite/accept, warn otherwise].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,
    /// Write log messages to this file (appended) instead of stderr.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The original tool's flat command line: wait for invites (without it: invite).
    #[arg(long)]
    pub accept: bool,
    /// The original tool's flat command line (see `plexus invite --help`).
    #[command(flatten)]
    pub connect: connect::ConnectArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover this host's NAT behaviour (RFC 5780) and whether it can take part in a punch.
    #[command(after_help = nat::AFTER_HELP)]
    Nat(nat::NatArgs),
    /// Invite the peer, punch the corridor and run the executor on it.
    #[command(after_help = EXIT_HELP)]
    Invite(connect::ConnectArgs),
    /// Wait for invites from the peer; for each, punch, answer, and run the executor.
    #[command(after_help = EXIT_HELP)]
    Accept(connect::ConnectArgs),
    /// Create keys and S/MIME certificates for rendezvous messages.
    Cert(cert::CertArgs),
    /// Work with profiles.
    Profile(ProfileArgs),
    /// Print a shell completion script (bash, zsh, fish) to stdout.
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Print the man page plexus(1) (roff) to stdout.
    #[command(hide = true)]
    Man,
}

/// `plexus profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// What to do with the profile.
    #[command(subcommand)]
    pub command: ProfileCommand,
}

/// `plexus profile` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Validate a profile and print the resolved settings (secrets masked).
    Check {
        /// A name under ~/.config/plexus/profiles/NAME.yaml, or a path.
        #[arg(value_name = "NAME|PATH")]
        profile: String,
    },
}

/// Why a command did not succeed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad or missing arguments or settings: exit 2.
    Usage(String),
    /// The operation failed: exit 1.
    Failed(String),
}

impl Failure {
    /// The documented exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => f.write_str(m),
        }
    }
}
