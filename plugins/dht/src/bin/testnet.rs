//! `plexus-dht-testnet`: a small mainline DHT for the lab, never the real network.
//!
//! Runs one server-mode node per given address (all on one port), the first joining
//! nobody and the others joining through the first ones, prints `ready N` on stdout and
//! serves until killed. With `--observe FILE` every node appends each BEP 44 mutable
//! put it receives to FILE as `put target=<hex> key=<hex> salt=<hex>`: the view of an
//! observer who runs DHT nodes, for the tests' privacy assertions.
//!
//! ```text
//! plexus-dht-testnet --ips 203.0.113.130-203.0.113.159 --port 6881 [--bootstrap H:P,…] [--observe FILE]
//! ```

use mainline::{Dht, RequestFilter, RequestSpecific, ServerSettings};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn usage(msg: &str) -> ! {
    eprintln!(
        "plexus-dht-testnet: {msg}\nusage: plexus-dht-testnet --ips FIRST-LAST|A,B,… --port P \
         [--bootstrap HOST:PORT,…] [--observe FILE]"
    );
    std::process::exit(2)
}

fn parse_ips(s: &str) -> Vec<Ipv4Addr> {
    let ip = |t: &str| -> Ipv4Addr {
        t.trim()
            .parse()
            .unwrap_or_else(|_| usage(&format!("{t:?} is not an IPv4 address")))
    };
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (u32::from(ip(a)), u32::from(ip(b)));
        if b < a || b - a >= 256 {
            usage("--ips range must be ascending and at most 256 addresses");
        }
        (a..=b).map(Ipv4Addr::from).collect()
    } else {
        s.split(',').map(ip).collect()
    }
}

/// Records puts of mutable items (parsed from the request's Debug text: mainline keeps
/// the request enum private).
#[derive(Debug, Clone)]
struct Observer(Arc<Mutex<std::fs::File>>);

/// The bytes of `field: [1, 2, …]` in a Debug text, as hex.
fn debug_bytes(text: &str, field: &str) -> Option<String> {
    let start = text.find(field)? + field.len();
    let rest = &text[start..];
    let end = rest.find(']')?;
    let mut hex = String::new();
    for n in rest[..end].split(',') {
        let b: u8 = n.trim().parse().ok()?;
        hex += &format!("{b:02x}");
    }
    Some(hex)
}

impl RequestFilter for Observer {
    fn allow_request(&self, request: &RequestSpecific, _from: SocketAddrV4) -> bool {
        let text = format!("{:?}", request.request_type);
        if text.contains("PutMutable(") {
            let target = text
                .split("target: Id(")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .unwrap_or("?");
            let key = debug_bytes(&text, "k: [").unwrap_or_default();
            let salt = debug_bytes(&text, "salt: Some([").unwrap_or_default();
            if let Ok(mut f) = self.0.lock() {
                let _ = writeln!(f, "put target={target} key={key} salt={salt}");
            }
        }
        true
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut ips, mut port, mut bootstrap, mut observe) = (Vec::new(), 0u16, Vec::new(), None);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--ips" => ips = parse_ips(&val()),
            "--port" => port = val().parse().unwrap_or_else(|_| usage("--port: a number")),
            "--bootstrap" => bootstrap = val().split(',').map(str::to_string).collect(),
            "--observe" => observe = Some(val()),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if ips.is_empty() || port == 0 {
        usage("--ips and --port are required");
    }
    let observer = observe.map(|path| {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| usage(&format!("--observe {path}: {e}")));
        Observer(Arc::new(Mutex::new(f)))
    });
    let mut nodes: Vec<Dht> = Vec::new();
    for ip in &ips {
        let mut b = Dht::builder();
        b.server_mode()
            .bind_address(*ip)
            .port(port)
            .public_ip(*ip)
            .request_timeout(Duration::from_millis(500));
        if let Some(o) = &observer {
            b.server_settings(ServerSettings {
                filter: Box::new(o.clone()),
                ..Default::default()
            });
        }
        // Join through the given nodes, else through the first few of this run.
        let join: Vec<String> = if !bootstrap.is_empty() {
            bootstrap.clone()
        } else {
            ips.iter()
                .take_while(|x| *x != ip)
                .take(4)
                .map(|x| format!("{x}:{port}"))
                .collect()
        };
        if join.is_empty() {
            b.no_bootstrap();
        } else {
            b.bootstrap(&join);
        }
        match b.build() {
            Ok(n) => nodes.push(n),
            Err(e) => {
                eprintln!("plexus-dht-testnet: cannot bind {ip}:{port}: {e}");
                std::process::exit(1)
            }
        }
    }
    // Every node looks itself up once, so the routing tables fill before clients come.
    std::thread::scope(|s| {
        for n in &nodes {
            s.spawn(|| n.bootstrapped());
        }
    });
    println!("ready {}", nodes.len());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
