//! The `plexus` binary: parse, validate, run, map the outcome to an exit code
//! (0 success, 1 the operation failed, 2 usage, 130 interrupted).

use std::process::ExitCode;

use clap::Parser;

mod args;
mod cert;
mod connect;
mod docs;
mod nat;

use args::{Cli, Command, Failure, ProfileCommand};

fn init_logging(cli: &Cli, default: log::LevelFilter) -> Result<(), String> {
    let level = cli.log_level.unwrap_or(default);
    let d = fern::Dispatch::new()
        .format(|out, msg, rec| {
            out.finish(format_args!(
                "{} {} {}: {msg}",
                humantime_now(),
                rec.level(),
                rec.target()
            ))
        })
        .level(level);
    let d = match &cli.log_file {
        Some(p) => d.chain(
            fern::log_file(p)
                .map_err(|e| format!("cannot open --log-file {}: {e}", p.display()))?,
        ),
        None => d.chain(std::io::stderr()),
    };
    d.apply().map_err(|e| format!("cannot set up logging: {e}"))
}

/// Seconds.milliseconds since the epoch: sortable, and needs no time-zone database.
fn humantime_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", t.as_secs(), t.subsec_millis())
}

fn run_nat(args: &nat::NatArgs) -> Result<(), Failure> {
    let (cfg, json) = args.config().map_err(|e| Failure::Usage(e.to_string()))?;
    // The router is asked in parallel with STUN, so `plexus nat` takes no longer.
    let bound = std::time::Duration::from_millis(args.port_mapping_timeout);
    let probe =
        (!args.no_port_mapping).then(|| std::thread::spawn(move || plexus::portmap::probe(bound)));
    let out = nat::outcomes(cfg.family, plexus::nat::discover_families(&cfg));
    if let Some(e) = nat::none_measured(&out) {
        return Err(Failure::Failed(e));
    }
    let pm = probe.and_then(|t| t.join().ok());
    if json {
        println!("{}", nat::families_json(&out, pm.as_ref()));
    } else {
        print!("{}", nat::families_text(&out, pm.as_ref()));
    }
    Ok(())
}

/// Ctrl-C: say so and exit 130 (the documented code) instead of dying by the signal,
/// so scripts and service managers see an exit status. Nothing is left half-written:
/// every file plexus writes is replaced atomically (temporary file, then rename), and
/// the mail servers drop the abandoned sessions themselves.
extern "C" fn on_interrupt(_: libc::c_int) {
    const MSG: &[u8] = b"plexus: interrupted\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(130);
    }
}

fn exit_130_on_interrupt() {
    // SAFETY: installs a handler that only calls async-signal-safe functions. Children
    // (the executor) get the default disposition back at exec.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn main() -> ExitCode {
    // Before anything reads a password or key (clap may already read the environment):
    // no core dump and no same-user ptrace or /proc/<pid>/mem of this process.
    let dumpable = plexus::secret::make_non_dumpable();
    exit_130_on_interrupt();
    let cli = Cli::parse();
    let connecting = matches!(
        cli.command,
        None | Some(Command::Invite(_)) | Some(Command::Accept(_))
    );
    let default_level = if connecting {
        log::LevelFilter::Info
    } else {
        log::LevelFilter::Warn
    };
    if let Err(e) = init_logging(&cli, default_level) {
        eprintln!("plexus: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = dumpable {
        log::warn!("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): {e}");
    }
    let result = match &cli.command {
        Some(Command::Nat(args)) => run_nat(args),
        Some(Command::Invite(args)) => connect::run_invite(args),
        Some(Command::Accept(args)) => connect::run_accept(args),
        Some(Command::Cert(args)) => cert::run_cert(args, &mut std::io::stdout().lock())
            .map_err(|e| Failure::Failed(e.to_string())),
        Some(Command::Profile(p)) => match &p.command {
            ProfileCommand::Check { profile } => plexus::profile::check(profile)
                .map(|text| print!("{text}"))
                .map_err(|e| Failure::Usage(e.to_string())),
        },
        Some(Command::Completions { shell }) => {
            docs::completions(*shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Some(Command::Man) => docs::man(&mut std::io::stdout().lock())
            .map_err(|e| Failure::Failed(format!("cannot write the man page: {e}"))),
        None if cli.accept => connect::run_accept(&cli.connect),
        None => {
            if cli.connect == connect::ConnectArgs::default() {
                use clap::CommandFactory;
                let _ = Cli::command().print_help();
                return ExitCode::from(2);
            }
            connect::run_invite(&cli.connect)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus: {e}");
            ExitCode::from(e.code())
        }
    }
}
