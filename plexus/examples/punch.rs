//! Punch a path with the library and use the socket directly, no executor.
//!
//! ```text
//! cargo run -p plexus --example punch -- accept ~/.config/plexus/profiles/alice.yaml   # one side
//! cargo run -p plexus --example punch -- invite ~/.config/plexus/profiles/bob.yaml     # the other
//! ```
//!
//! Each side sends one greeting over the punched socket and waits (at most 10 s) for
//! the other's; exit 0 when both went through.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use plexus::profile::Profile;
use plexus::Session;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, profile] = &args[..] else {
        eprintln!("usage: punch invite|accept PROFILE");
        return ExitCode::from(2);
    };
    match run(mode, profile) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("punch: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(mode: &str, profile: &str) -> Result<(), Box<dyn std::error::Error>> {
    let profile = Profile::load(profile)?;
    let mut session = Session::from_profile(&profile)?;
    let connected = match mode {
        "invite" => session.invite()?,
        "accept" => session.accept()?,
        other => return Err(format!("unknown mode {other:?}: invite or accept").into()),
    };
    let (socket, peer) = (&connected.socket, connected.corridor.peer);
    println!(
        "punched {} -> {peer}, key of {} bits",
        connected.corridor.inner,
        connected.key().0.len() * 8
    );
    let hello = format!("hello from {}", connected.corridor.host_id);
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    // Resend until the peer's greeting arrives: the first ones may cross in flight.
    while Instant::now() < end {
        socket.send_to(hello.as_bytes(), peer)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == peer && buf[..n].starts_with(b"hello from ") => {
                println!(
                    "received {:?} from {from}",
                    String::from_utf8_lossy(&buf[..n])
                );
                // One more greeting, so the peer hears us even if it started later.
                socket.send_to(hello.as_bytes(), peer)?;
                return Ok(());
            }
            // The handshake's last packets may still arrive: not greetings, skipped.
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err("no greeting from the peer within 10 s".into())
}
