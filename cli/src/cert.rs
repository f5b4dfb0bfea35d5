//! `plexus cert`: create the key and certificate a host needs.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use plexus::identity::{self, Created, IdentityError, KeyKind, NewCert, PeerId};

/// `plexus cert …`
#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

/// The `cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a private key and a self-signed S/MIME certificate (and optionally a CSR).
    ///
    /// Writes DIR/<mail>_<instance>.key (mode 0600, never overwritten) and
    /// DIR/<mail>_<instance>.pem, the certificate to hand to the peer.
    New(CertNewArgs),
}

/// `plexus cert new`
#[derive(Debug, Args)]
pub struct CertNewArgs {
    /// This host's id: mail address and instance name, e.g. alice@example.org/laptop.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub id: PeerId,
    /// Directory to write the files into (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// EC P-256 key (the default): small and fast; encryption to it needs CMS-capable tools.
    #[arg(long, conflicts_with = "rsa")]
    pub ec: bool,
    /// RSA 3072 key: the most widely interoperable with mail clients and `openssl smime`.
    #[arg(long)]
    pub rsa: bool,
    /// Validity of the self-signed certificate, in days.
    #[arg(long, value_name = "N", default_value_t = 730,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Also write a certificate signing request (DIR/<name>.csr) for a real CA.
    #[arg(long)]
    pub csr: bool,
}

fn parse_id(s: &str) -> Result<PeerId, String> {
    PeerId::parse(s).map_err(|e| e.to_string())
}

/// Run `plexus cert …`, writing results to `out`.
pub fn run_cert(args: &CertArgs, out: &mut dyn Write) -> Result<(), IdentityError> {
    match &args.command {
        CertCommand::New(a) => run_cert_new(a, out).map(|_| ()),
    }
}

/// Run `plexus cert new`: create the files and tell the user what to do with them.
pub fn run_cert_new(args: &CertNewArgs, out: &mut dyn Write) -> Result<Created, IdentityError> {
    let req = NewCert {
        id: args.id.clone(),
        out_dir: args.out.clone(),
        kind: if args.rsa { KeyKind::Rsa } else { KeyKind::Ec },
        days: args.days,
        csr: args.csr,
    };
    let made = identity::create(&req)?;
    report(&req, &made, out).map_err(|source| IdentityError::Write {
        path: PathBuf::from("<stdout>"),
        source,
    })?;
    Ok(made)
}

fn report(req: &NewCert, made: &Created, out: &mut dyn Write) -> io::Result<()> {
    let kind = match req.kind {
        KeyKind::Ec => "EC P-256",
        KeyKind::Rsa => "RSA 3072",
    };
    writeln!(
        out,
        "created private key  {} ({kind}, mode 0600: keep it on this machine, never send it)",
        made.key.display()
    )?;
    writeln!(
        out,
        "created certificate  {} (self-signed for {}, valid {} days)",
        made.cert.display(),
        req.id.mail(),
        req.days
    )?;
    if let Some(csr) = &made.csr {
        writeln!(out, "created CSR          {} (send it to a CA; put the certificate it issues in place of the .pem)", csr.display())?;
    }
    writeln!(out)?;
    writeln!(out, "hand this file to your peer: {}", made.cert.display())?;
    writeln!(out, "SHA-256 fingerprint: {}", made.fingerprint)?;
    writeln!(
        out,
        "(the peer should compare the fingerprint with you over another channel, e.g. by phone)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: CertCommand,
    }

    #[test]
    fn cert_new_prints_what_to_hand_over_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("plexus-smime-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.to_str().unwrap();
        let T {
            c: CertCommand::New(args),
        } = T::try_parse_from([
            "t",
            "new",
            "--id",
            "gina@example.org/pc",
            "--out",
            d,
            "--rsa",
            "--csr",
            "--days",
            "10",
        ])
        .unwrap();
        let mut out = Vec::new();
        let made = run_cert_new(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!(
                "hand this file to your peer: {}",
                made.cert.display()
            )),
            "{text}"
        );
        assert!(text.contains(&made.fingerprint));
        assert!(text.contains("RSA 3072"));
        let before = std::fs::read(&made.key).unwrap();
        let err = run_cert_new(&args, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("never overwrites"), "{err}");
        assert_eq!(std::fs::read(&made.key).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert!(T::try_parse_from(["t", "new", "--id", "Gina@example.org", "--out", "x"]).is_err());
        assert!(T::try_parse_from([
            "t",
            "new",
            "--id",
            "g@example.org/pc",
            "--out",
            "x",
            "--ec",
            "--rsa"
        ])
        .is_err());
        assert!(T::try_parse_from([
            "t",
            "new",
            "--id",
            "g@example.org/pc",
            "--out",
            "x",
            "--days",
            "0"
        ])
        .is_err());
    }
}
