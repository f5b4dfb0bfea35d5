#!/usr/bin/env bash
# plexus quick start: one real hole punch between two machines behind NAT, on this box.
#
#   sudo ./quickstart.sh [--inviter-nat TYPE] [--acceptor-nat TYPE] [--mediator email|file|dht]
#
# TYPE is none | full | address | port | symmetric (default: port for both, the common
# home-router case). As root on Debian 12 it installs what is missing, builds plexus,
# starts the NAT lab (network namespaces with real NATs, coturn and a mail server; see
# README "The lab"), creates two identities (alice invites, bob accepts), writes a YAML
# profile for each, runs `plexus accept --once` behind one NAT and `plexus invite`
# behind the other, and lets the two executors greet each other over the punched path.
# With --mediator dht the rendezvous goes through a 30-node mainline DHT testnet in the
# lab (never the real DHT). It prints the story; plexus's own logs go to files, shown
# only when something fails.
# Everything it creates (lab, temp dir) is removed on exit. Exit 0 when the punch worked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

INV_NAT=port ACC_NAT=port MEDIATOR=email
while (($#)); do
    case $1 in
        --inviter-nat) INV_NAT=${2:-}; shift 2 ;;
        --acceptor-nat) ACC_NAT=${2:-}; shift 2 ;;
        --mediator) MEDIATOR=${2:-}; shift 2 ;;
        -h | --help) usage ;;
        *) echo "quickstart.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for t in "$INV_NAT" "$ACC_NAT"; do
    [[ $t =~ ^(none|full|address|port|symmetric)$ ]] ||
        { echo "quickstart.sh: NAT type '$t': use none, full, address, port or symmetric" >&2; exit 2; }
done
[[ $MEDIATOR =~ ^(email|file|dht)$ ]] || { echo "quickstart.sh: --mediator email, file or dht" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "quickstart.sh: run as root (it creates network namespaces): sudo $0 $*" >&2; exit 2; }

# The lab has two sites per NAT type (a-TYPE, b-TYPE).
INV_SITE=a-$INV_NAT ACC_SITE=b-$ACC_NAT

START=$(date +%s%N)
since() { echo $((($(date +%s%N) - START) / 1000000)); }
say() { printf '%7s  %s\n' "$(awk -v ms="$(since)" 'BEGIN{printf "%.1fs", ms/1000}')" "$*"; }
LAB=plxqs$(printf '%04x%04x' $RANDOM $RANDOM)
WORK=$(mktemp -d /tmp/plxqs-XXXXXX)
chmod 0755 "$WORK"
SHOW_LOGS=0

cleanup() {
    local rc=$?
    # Output piped into `head` must not stop the cleanup half-way.
    trap '' PIPE
    local files=("$WORK"/*.log "$WORK"/*.err)
    ((SHOW_LOGS)) && files=("$WORK"/alice.err "$WORK"/alice.log "$WORK"/bob.err "$WORK"/bob.log)
    if ((SHOW_LOGS)) || ((rc != 0 && rc != 130)); then
        for f in "${files[@]}"; do
            [[ -s $f ]] || continue
            printf '\n--- last lines of %s\n' "$(basename "$f")"
            tail -n 25 "$f"
        done
    fi
    "$ROOT/tests/lab/lab.sh" down "$LAB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "plexus quick start: alice (behind a '$INV_NAT' NAT) invites bob (behind a '$ACC_NAT' NAT) via $MEDIATOR"
echo

# 1. System packages, Rust, build.
"$ROOT/tests/lab/install-deps.sh" >"$WORK/install.log" 2>&1 ||
    { echo "installing packages failed:"; tail -n 20 "$WORK/install.log"; exit 1; }
if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then . "$HOME/.cargo/env"; fi
command -v cargo >/dev/null || { echo "quickstart.sh: cargo not found: install Rust stable (rustup) first" >&2; exit 1; }
say "system packages ready"
# A debug build: it compiles in about half the time of a release build, is what
# ./tests/run-all.sh builds next (so nothing is compiled twice), and the corridor's time
# is spent waiting for mail and packets, not computing.
pkgs=(-p plexus-cli)
[[ $MEDIATOR == file ]] && pkgs+=(-p plexus-file)
[[ $MEDIATOR == dht ]] && pkgs+=(-p plexus-dht)
say "building plexus (cargo build ${pkgs[*]}; the first build takes a few minutes)"
cargo build "${pkgs[@]}" >"$WORK/build.log" 2>&1 || { echo "build failed:"; tail -n 30 "$WORK/build.log"; exit 1; }
PLEXUS=$ROOT/target/debug/plexus
say "built $PLEXUS"

# 2. The lab.
lab_args=(up --name "$LAB" --owner $$)
[[ $MEDIATOR != email ]] && lab_args+=(--no-mail)
"$ROOT/tests/lab/lab.sh" "${lab_args[@]}" >"$WORK/lab.log" 2>&1 ||
    { echo "starting the lab failed:"; tail -n 20 "$WORK/lab.log"; exit 1; }
# Everything the script needs from the lab's description, read once.
eval "$(python3 - "/run/plexus-lab/$LAB/lab.json" "$INV_SITE" "$ACC_SITE" <<'EOF'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
v = {"STUN": "%s:%s" % (d["stun"]["ips"][0], d["stun"]["port"]),
     "INV_IP": d["sites"][sys.argv[2]]["host_ip"], "ACC_IP": d["sites"][sys.argv[3]]["host_ip"]}
m = d.get("mail")
if m:
    v.update(SMTPS="%s:%s" % (m["ip"], m["smtps_port"]), IMAPS="%s:%s" % (m["ip"], m["imaps_port"]),
             MAIL_CA=m["ca_file"])
    for a in m["accounts"]:
        for who in ("alice", "bob"):
            if a["address"] == who + "@lab.example":
                v[who + "_login"], v[who + "_pw"] = a["login"], a["password"]
for k, x in v.items():
    print("%s=%s" % (k, shlex.quote(str(x))))
EOF
)"
say "lab $LAB up: alice at $INV_IP (site $INV_SITE), bob at $ACC_IP (site $ACC_SITE), STUN $STUN"
in_site() { local site=$1; shift; "$ROOT/tests/lab/lab.sh" exec "$LAB" "$site-h" "$@"; }

# The DHT testnet: 30 mainline nodes, one address each, in the lab's dht namespace
# (killed with the lab). Waits for them, bounded.
DHT_BOOT='"203.0.113.130:6881", "203.0.113.131:6881", "203.0.113.132:6881"'
if [[ $MEDIATOR == dht ]]; then
    "$ROOT/tests/lab/lab.sh" exec "$LAB" dht "$ROOT/target/debug/plexus-dht-testnet" \
        --ips 203.0.113.130-203.0.113.159 --port 6881 >"$WORK/testnet.out" 2>"$WORK/testnet.err" &
    for _ in $(seq 1 100); do grep -q '^ready' "$WORK/testnet.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '^ready 30' "$WORK/testnet.out" ||
        { echo "the DHT testnet did not start:"; tail -n 5 "$WORK/testnet.err"; exit 1; }
    say "DHT testnet: 30 mainline nodes at 203.0.113.130-159:6881 (lab only)"
fi

# 3. Identities: a key and a self-signed S/MIME certificate each. On real machines each
#    side runs `plexus cert new` and sends only the .pem to the other.
A_ID=alice@lab.example/home B_ID=bob@lab.example/office
"$PLEXUS" cert new --id "$A_ID" --out "$WORK/alice" >"$WORK/cert.log" 2>&1
"$PLEXUS" cert new --id "$B_ID" --out "$WORK/bob" >>"$WORK/cert.log" 2>&1
A_FP=$(openssl x509 -noout -fingerprint -sha256 -in "$WORK/alice/alice@lab.example_home.pem" | cut -d= -f2 | cut -c1-23)
B_FP=$(openssl x509 -noout -fingerprint -sha256 -in "$WORK/bob/bob@lab.example_office.pem" | cut -d= -f2 | cut -c1-23)
say "identities: $A_ID (SHA-256 $A_FP…), $B_ID ($B_FP…)"

# 4. What each NAT is (plexus nat: RFC 5780 tests against the lab's coturn).
nat_line() {
    python3 -c '
import json, sys
# One object per address family; a family without a STUN server of its own is left out.
lines = []
for v in json.loads(sys.stdin.read()):
    if not v.get("available"):
        continue
    verdict = ("the peer can predict its public port" if v.get("punchable")
               else "maps per destination: the peer cannot predict its port")
    lines.append("%s mapping %s, filtering %s, public %s: %s" % (
        {"ipv4": "IPv4", "ipv6": "IPv6"}.get(v.get("family"), v.get("family")),
        v.get("mapping") or "unknown", v.get("filtering") or "unknown", v.get("mapped"), verdict))
print("; ".join(lines) or "no address family measured")'
}
for who in alice bob; do
    site=$INV_SITE; [[ $who == bob ]] && site=$ACC_SITE
    if out=$(in_site "$site" "$PLEXUS" nat --json --stun "$STUN" 2>"$WORK/nat-$who.log"); then
        say "$who's NAT: $(printf '%s' "$out" | nat_line)"
    else
        say "$who's NAT: discovery failed"; SHOW_LOGS=1
    fi
done

# 5. Profiles (README "Profiles"). Each side has its own mailbox (or file address).
exec_block() {
    local who=$1
    cat <<EOF
executor:
  command:
    program: $ROOT/tests/lab/exchange.py
    env: { EXCHANGE_OUT: $WORK/$who.exchange.json, EXCHANGE_SECONDS: "8" }
EOF
}
mediator_block() {
    local who=$1 peer=$2
    if [[ $MEDIATOR == email ]]; then
        local login_var=${who}_login pw_var=${who}_pw
        (umask 077 && printf '%s' "${!pw_var}" >"$WORK/$who/mail.pw")
        cat <<EOF
mediator:
  email:
    smtp: "$SMTPS"
    imap: "$IMAPS"
    login: ${!login_var}
    password: { file: mail.pw }
    from: $who@lab.example
    to: $peer@lab.example
    ca_file: $MAIL_CA
EOF
    elif [[ $MEDIATOR == dht ]]; then
        # EC identities: the channel secret comes from ECDH, nothing else to share.
        local peer_id=$B_ID
        [[ $peer == alice ]] && peer_id=$A_ID
        cat <<EOF
mediator:
  plugin:
    path: $ROOT/target/debug/libplexus_dht.so
    to: $peer_id
    settings: { bootstrap: [$DHT_BOOT], poll_interval_ms: 1000, max_poll_interval_ms: 1000, request_timeout_ms: 250 }
EOF
    else
        cat <<EOF
mediator:
  plugin:
    path: $ROOT/target/debug/libplexus_file.so
    to: $peer
    settings: { dir: $WORK/shared, address: $who, poll_interval_ms: 100 }
EOF
    fi
}
mkdir -p "$WORK/shared"
write_profile() {
    local who=$1 me=$2 peer=$3 peer_who=$4 peer_cert=$5
    cp "$WORK/$peer_who/$peer_cert" "$WORK/$who/peer.pem"
    {
        cat <<EOF
host: { id: $me, cert: ${me/\//_}.pem, key: ${me/\//_}.key }
peer: { id: $peer, cert: peer.pem }
stun: ["$STUN"]
timeouts: { rendezvous_s: 60, handshake_ms: 10000 }
replay: { state_file: replay.state }
EOF
        mediator_block "$who" "$peer_who"
        exec_block "$who"
    } >"$WORK/$who/$who.yaml"
    "$PLEXUS" profile check "$WORK/$who/$who.yaml" >"$WORK/$who-profile.txt" 2>&1 ||
        { echo "profile check failed:"; cat "$WORK/$who-profile.txt"; exit 1; }
}
write_profile alice "$A_ID" "$B_ID" bob "bob@lab.example_office.pem"
write_profile bob "$B_ID" "$A_ID" alice "alice@lab.example_home.pem"
say "profiles written and checked (plexus profile check): alice.yaml, bob.yaml"

# 6. bob accepts, then alice invites.
in_site "$ACC_SITE" "$PLEXUS" accept --once --profile "$WORK/bob/bob.yaml" --log-level debug \
    --log-file "$WORK/bob.log" >"$WORK/bob.out" 2>"$WORK/bob.err" &
BOB=$!
for _ in $(seq 1 200); do
    grep -q "waiting for invites" "$WORK/bob.log" 2>/dev/null && break
    kill -0 $BOB 2>/dev/null || break
    sleep 0.1
done
if ! grep -q "waiting for invites" "$WORK/bob.log" 2>/dev/null; then
    wait $BOB && rc=0 || rc=$?
    say "bob's plexus accept stopped before waiting (exit $rc)"
    SHOW_LOGS=1
    exit 1
fi
say "bob: plexus accept --once is waiting for invites"

T_INVITE=$(date +%s%N)
in_site "$INV_SITE" "$PLEXUS" invite --profile "$WORK/alice/alice.yaml" --log-level debug \
    --log-file "$WORK/alice.log" >"$WORK/alice.out" 2>"$WORK/alice.err" && A_RC=0 || A_RC=$?
# bob ends by himself once his executor is done (bounded wait, then we stop him, by PID);
# when alice gave up before sending anything, bob has nothing to wait for.
limit=300
((A_RC != 0)) && ! grep -q "invite sent" "$WORK/alice.log" 2>/dev/null && limit=0
for _ in $(seq 1 $limit); do kill -0 $BOB 2>/dev/null || break; sleep 0.1; done
if kill -0 $BOB 2>/dev/null; then
    kill $BOB 2>/dev/null || true
fi
wait $BOB && B_RC=0 || B_RC=$?

# 7. The timeline, from both sides' logs (their timestamps share this machine's clock).
python3 - "$WORK" "$T_INVITE" "$A_RC" "$B_RC" <<'EOF'
import json, os, re, sys
work, t0, a_rc, b_rc = sys.argv[1], int(sys.argv[2]) / 1e9, int(sys.argv[3]), int(sys.argv[4])

def lines(who):
    try:
        with open(os.path.join(work, who + ".log")) as f:
            for l in f:
                m = re.match(r"(\d+\.\d+) (\w+) (\S+): (.*)", l.rstrip("\n"))
                if m:
                    yield float(m.group(1)), m.group(2), m.group(4)
    except OSError:
        return

events = []
patterns = [
    ("alice", r"^NAT: (.*)", "alice: own NAT measured: {0}"),
    ("alice", r"^NAT filtering (.*)", "alice: own NAT's filtering measured meanwhile: {0}"),
    ("alice", r"^public endpoint (\S+)", "alice: public endpoint {0}"),
    ("alice", r"^invite sent to (\S+) via (.*) \(session", "alice: invite sealed (S/MIME) and sent to {0} via {1}"),
    ("alice", r"^dht: published message \S+ \((\d+) items.* in (\d+) ms", "alice: invite stored in the DHT as {0} encrypted items ({1} ms)"),
    ("bob", r"^dht: found message \S+ \((\d+) items.* in (\d+) ms", "bob: invite found in the DHT ({0} items, lookup {1} ms)"),
    ("bob", r"^invite from (\S+) \(session \S+\) at (.*), NAT", "bob: invite opened and verified, from {0} at {1}"),
    ("bob", r"^NAT: (.*)", "bob: own NAT measured: {0}"),
    ("bob", r"^plan for \S+ \(NAT .*\): (.*)", "bob: plan for this pair (both NAT profiles known): {0}"),
    ("bob", r"^punching toward (\S+) at full TTL", "bob: his NAT maps per destination: punch toward {0} at full TTL until alice answers"),
    ("bob", r"^birthday probing: (\d+) sockets send openers toward (\S+) with TTL (\d+)", "bob: birthday probing: {0} sockets open mappings toward {1} (TTL {2}, dying before alice's NAT)"),
    ("alice", r"^birthday probing: (\d+) sockets send openers toward (\S+) with TTL (\d+)", "alice: birthday probing: {0} sockets open mappings toward {1} (TTL {2}, dying before bob's NAT)"),
    ("alice", r"^birthday probing: up to (\d+) probes to random ports of (\S+)", "alice: birthday probing: up to {0} probes to random ports of {1}"),
    ("bob", r"^birthday probing: up to (\d+) probes to random ports of (\S+)", "bob: birthday probing: up to {0} probes to random ports of {1}"),
    ("alice", r"^birthday: the peer answered from (\S+) after (\d+) probes", "alice: a probe landed: bob answered from {0} after {1} probes"),
    ("bob", r"^birthday: the peer answered from (\S+) after (\d+) probes", "bob: a probe landed: alice answered from {0} after {1} probes"),
    ("bob", r"^punching toward (\S+) with TTL (\d+)", "bob: punch toward {0} with TTL {1}: enough to open his own NAT, too few to reach the far side"),
    ("bob", r"^accept sent to (\S+) via (.*)", "bob: accept sealed and sent back to {0}"),
    ("alice", r"^accept from (\S+) at (.*) \(NAT .*\): (.*)", "alice: accept opened and verified, bob at {1}; method: {2}"),
    ("alice", r"^punching toward (.*)…", "alice: handshake toward {0}"),
    ("alice", r"^connected to (\S+) in (\d+) ms", "alice: handshake done, connected to {0}"),
    ("bob", r"^connected to (\S+) in (\d+) ms", "bob: handshake done, connected to {0}"),
    ("alice", r"^starting executor", "alice: socket handed to the executor (exchange.py)"),
    ("bob", r"^starting executor", "bob: socket handed to the executor (exchange.py)"),
    ("alice", r"refus|failed|timed out", "alice: {line}"),
    ("bob", r"refus|failed|timed out", "bob: {line}"),
]
seen = set()
for who in ("alice", "bob"):
    for t, lvl, msg in lines(who):
        for order, (pw, pat, fmt) in enumerate(patterns):
            if pw != who:
                continue
            m = re.search(pat, msg)
            if m and (pat, who) not in seen:
                if "{line}" in fmt and lvl not in ("WARN", "ERROR"):
                    continue
                seen.add((pat, who))
                events.append((t, order, fmt.format(*m.groups(), line=msg[:150])))
                break
events.sort()
print()
print("  timeline (seconds after `plexus invite` started):")
for t, _, text in events:
    print("  %+7.3fs  %s" % (t - t0, text))

out = open(os.path.join(work, "alice.out")).read().strip() if os.path.exists(os.path.join(work, "alice.out")) else ""
m = re.search(r"discovery (\d+) ms, send (\d+) ms, wait (\d+) ms, handshake (\d+) ms, total (\d+) ms", out)
print()
if m:
    d, s, w, h, tot = m.groups()
    print("  time to connect (alice): %s ms = NAT discovery %s + send invite %s + wait for accept %s + handshake %s" % (tot, d, s, w, h))
for who, peer in (("alice", "bob"), ("bob", "alice")):
    p = os.path.join(work, who + ".exchange.json")
    try:
        ex = json.load(open(p))
    except (OSError, ValueError):
        if a_rc == 0:
            print("  %s's executor: no result" % who)
        continue
    got = ex.get("received") or {}
    print("  %s's executor received %r from %s; its own greeting acknowledged: %s; PLEXUS_KEY: %s hex digits"
          % (who, got.get("text"), got.get("from"), "yes" if ex.get("acknowledged") else "no", ex.get("key_len")))
EOF
echo
if ((A_RC == 0 && B_RC == 0)); then
    say "success: a direct UDP path between two NATed hosts, opened through $MEDIATOR; cleaning up"
    exit 0
fi
declined=$(grep -h "declined the invite" "$WORK/alice.err" "$WORK/alice.log" 2>/dev/null | head -n 1 || true)
if [[ -n $declined ]]; then
    say "bob declined (sealed, through $MEDIATOR): no method connects this pair without a relay:"
    printf '         %s\n' "${declined#plexus: }"
    exit 1
fi
SHOW_LOGS=1
say "no corridor (alice exit $A_RC, bob exit $B_RC): the logs follow"
for who in alice bob; do
    r=$(grep -hvE "^[0-9]+\.[0-9]+ (DEBUG|INFO|TRACE)" "$WORK/$who.err" 2>/dev/null | head -n 3 || true)
    [[ -n $r ]] && printf '         %s says: %s\n' "$who" "$r"
done
exit 1
