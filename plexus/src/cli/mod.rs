//! Command-line front ends of the subcommands (clap types stay in the binary).

pub mod cert;
