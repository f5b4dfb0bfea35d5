//! The original article's two command lines, as written there, with only the hosts,
//! ports, addresses and paths changed to the lab's: plain-word ids (`--host-id=remote
//! --peer-id=local`), the password on the command line, `--stun-ip`, `--bind-ip`,
//! `--bind-port` and `--exec-command=~/plexus/exec.sh`. The certificates are where
//! `plexus cert new --out ~/.config/plexus/keys` puts them (the README's first step),
//! and the lab's mail CA is trusted through the environment (`SSL_CERT_FILE`), as a
//! system CA would be, not through a flag the article does not have.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::corridor::{host_of, read, take_mailbox, wait, wait_for_text, Reaped};
use crate::lab::{plexus_bin, Lab};

/// A home directory for one side: its key and certificate made by `plexus cert new`
/// under ~/.config/plexus/keys, and ~/plexus/exec.sh running the test executor.
fn home(dir: &Path, who: &str, id: &str) -> PathBuf {
    let home = dir.join(format!("{who}-home"));
    let keys = home.join(".config/plexus/keys");
    fs::create_dir_all(&keys).unwrap();
    let out = Command::new(plexus_bin())
        .args(["cert", "new", "--id", id, "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    crate::lab::assert_ok("plexus cert new", &out);
    let exec = home.join("plexus/exec.sh");
    fs::create_dir_all(exec.parent().unwrap()).unwrap();
    let exchange = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/exchange.py");
    fs::write(
        &exec,
        format!(
            "#!/bin/sh\nEXCHANGE_OUT='{}' EXCHANGE_SECONDS=8 exec '{}' \"$@\"\n",
            dir.join(format!("{who}.exchange.json")).display(),
            exchange.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&exec, fs::Permissions::from_mode(0o755)).unwrap();
    home
}

/// Give each side the other's certificate (it is public), as a user would by mail.
fn swap_certs(a: (&Path, &str), b: (&Path, &str)) {
    for ((from, id), (to, _)) in [(a, b), (b, a)] {
        let name = format!("{}.pem", id.replace('/', "_"));
        fs::copy(
            from.join(".config/plexus/keys").join(&name),
            to.join(".config/plexus/keys").join(&name),
        )
        .unwrap();
    }
}

#[test]
fn the_articles_command_lines_connect() {
    let lab: &Lab = lab_or_skip!();
    let (inviter_site, acceptor_site) = ("a-port", "b-address");
    let _c = lab.claim(&[inviter_site, acceptor_site]);
    let dir = lab.scratch("article");
    let mail = lab.mail();
    let (yours, peers) = (take_mailbox(lab), take_mailbox(lab));
    let (local_id, remote_id) = (
        format!("{}/local", yours.address),
        format!("{}/remote", peers.address),
    );
    let local_home = home(&dir, "local", &local_id);
    let remote_home = home(&dir, "remote", &remote_id);
    swap_certs((&local_home, &local_id), (&remote_home, &remote_id));

    let smtps = format!("{}:{}", mail.ip, mail.smtps_port);
    let imaps = format!("{}:{}", mail.ip, mail.imaps_port);
    let stun = lab.stun.ips[0].to_string();
    assert_eq!(lab.stun.port, 3478, "the article's --stun-ip has no port");
    let spawn = |who: &str, site: &str, home: &Path, args: Vec<String>| {
        let host = host_of(lab, site);
        let mut c = lab.command(&host.netns, &plexus_bin());
        c.args(args)
            .args([
                format!("--bind-port={}", 40000),
                format!("--bind-ip={}", host.ip),
                "--exec-command=~/plexus/exec.sh".into(),
            ])
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .env("SSL_CERT_FILE", &mail.ca_file)
            .stdout(Stdio::from(
                fs::File::create(dir.join(format!("{who}.out"))).unwrap(),
            ))
            .stderr(Stdio::from(
                fs::File::create(dir.join(format!("{who}.log"))).unwrap(),
            ));
        c.spawn().unwrap()
    };
    // plexus --accept --email-smtps=smtp.peermailer.com:xxx --email-imaps=imap.peermailer.com:xxx
    //   --email-login=peerlogin --email-passwd=peerpassword --email-from=peerhost@peermailer.com
    //   --email-to=yourhost@yourmailer.com --host-id=remote --peer-id=local
    //   --stun-ip=stun.someserver.com --bind-port=xxxx --bind-ip=xxx.xxx.xxx.xxx
    //   --exec-command=~/plexus/exec.sh
    let remote = spawn(
        "remote",
        acceptor_site,
        &remote_home,
        vec![
            "--accept".into(),
            format!("--email-smtps={smtps}"),
            format!("--email-imaps={imaps}"),
            format!("--email-login={}", peers.login),
            format!("--email-passwd={}", peers.password),
            format!("--email-from={}", peers.address),
            format!("--email-to={}", yours.address),
            "--host-id=remote".into(),
            "--peer-id=local".into(),
            format!("--stun-ip={stun}"),
        ],
    );
    let _remote = Reaped(remote);
    let ready = wait_for_text(
        &dir.join("remote.log"),
        "waiting for invites",
        Duration::from_secs(30),
    );
    assert!(
        ready,
        "acceptor did not start:\n{}",
        read(dir.join("remote.log"))
    );
    // plexus --email-smtps=smtp.yourmailer.com:xxx --email-imaps=imap.yourmailer.com:xxx
    //   --email-login=yourlogin --email-passwd=yourpassword --email-from=yourhost@yourmailer.com
    //   --email-to=peerhost@peermailer.com --host-id=local --peer-id=remote
    //   --stun-ip=stun.someserver.com --bind-port=xxxx --bind-ip=xxx.xxx.xxx.xxx
    //   --exec-command=~/plexus/exec.sh
    let mut local = spawn(
        "local",
        inviter_site,
        &local_home,
        vec![
            format!("--email-smtps={smtps}"),
            format!("--email-imaps={imaps}"),
            format!("--email-login={}", yours.login),
            format!("--email-passwd={}", yours.password),
            format!("--email-from={}", yours.address),
            format!("--email-to={}", peers.address),
            "--host-id=local".into(),
            "--peer-id=remote".into(),
            format!("--stun-ip={stun}"),
        ],
    );
    let status = wait(&mut local, Duration::from_secs(200));
    let dump = || {
        format!(
            "--- local (inviter) {status:?}\n{}\n{}\n--- remote (acceptor)\n{}\n{}",
            read(dir.join("local.out")),
            read(dir.join("local.log")),
            read(dir.join("remote.out")),
            read(dir.join("remote.log"))
        )
    };
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "the inviter should connect and its executor exchange datagrams:\n{}",
        dump()
    );
    // The acceptor serves on (no --once in the article): its executor's result shows
    // that the corridor carried datagrams its way too.
    let remote_done = wait_for_text(
        &dir.join("remote.exchange.json"),
        "acknowledged",
        Duration::from_secs(20),
    );
    assert!(
        remote_done,
        "acceptor's executor left no result:\n{}",
        dump()
    );
    for who in ["local", "remote"] {
        let ex: serde_json::Value =
            serde_json::from_str(read(dir.join(format!("{who}.exchange.json"))).trim())
                .unwrap_or_else(|e| panic!("{who}: {e}\n{}", dump()));
        assert!(
            ex["received"].is_object() && ex["acknowledged"] == true,
            "{who}'s executor: {ex}\n{}",
            dump()
        );
    }
    let log = read(dir.join("local.log"));
    assert!(
        log.contains("process list"),
        "plain --email-passwd warns:\n{log}"
    );
}
