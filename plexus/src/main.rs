//! The `plexus` binary: parse, validate, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
mod cli;

use cli::{nat, Cli, Command};

fn init_logging(cli: &Cli) -> Result<(), String> {
    let mut d = fern::Dispatch::new()
        .format(|out, msg, rec| out.finish(format_args!("{} {}: {msg}", rec.level(), rec.target())))
        .level(cli.log_level)
        .chain(std::io::stderr());
    if let Some(p) = &cli.log_file {
        let f = fern::log_file(p)
            .map_err(|e| format!("cannot open --log-file {}: {e}", p.display()))?;
        d = d.chain(f);
    }
    d.apply().map_err(|e| format!("cannot set up logging: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("plexus: {e}");
        return ExitCode::from(2);
    }
    match &cli.command {
        Command::Nat(args) => {
            let (cfg, json) = match args.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("plexus nat: {e}");
                    return ExitCode::from(2);
                }
            };
            match plexus::nat::discover(&cfg) {
                Ok(r) if json => println!("{}", nat::to_json(&r)),
                Ok(r) => print!("{}", nat::to_text(&r)),
                Err(e) => {
                    eprintln!("plexus nat: {e}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
    }
}
