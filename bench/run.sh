#!/usr/bin/env bash
# plexus benchmarks, in one run, as root (network namespaces; the NAT lab):
#   (a) NAT discovery time per NAT type next to coturn's turnutils_natdiscovery (bench/nat.sh)
#   (b) time to connect per NAT pair, with its breakdown, next to the lab's lower bound
#   (c) CPU time and peak RSS of an accepting instance idling for 60 s
#   (d) N peers inviting one acceptor at once (10 and 50 by default)
#   (e) component figures, no lab: S/MIME seal/open per key type, one plugin call
#       through the C ABI, the handshake under simulated loss (virtual time)
#   (f) a flooded mailbox: an acceptor whose INBOX holds N forged plexus mails (and
#       old ones) answers a genuine invite: time to connect and peak RSS, first start
#       and after a restart (refused UIDs remembered)
#   (g) the tunnel plugin: iperf3 both ways and a request/response round trip through
#       the tunnel, through ssh -L over a port forward, and plain TCP over that forward;
#       the plugin's CPU per GB and peak RSS (bench/tunnel.sh)
#   (h) time to connect through the dht mediator on a 30-node mainline testnet in the lab,
#       next to e-mail in the same run, with the breakdown (publish, find, handshake)
#   (i) birthday probing: for both birthday pairs (symmetric -> port-restricted and
#       back), N attempts each: success on the first attempt, probes sent, handshake
#       time median and 95th percentile
#   (j) the TURN relay (coturn in the lab): allocation cost, RTT and paced UDP throughput
#       direct and through the relay on the same pair of hosts (plexus/benches/relay.rs)
#   (k) IPv6: time to connect over IPv6 vs IPv4 for the same pairs of sites in the same run
#       (--family ipv6 / ipv4 / auto), and how many ordered pairs of six sites (five dual-stack
#       or IPv6-only ones and an IPv4-only one) connect without a relay with IPv4 only vs both
#
#   bench/run.sh [--idle-seconds N] [--peers "10 50"] [--flood N] [--attempts N] [--dht-rounds N] [--parts abcdefghijk]
#   (release build; built when missing or stale; --parts picks the parts to run)
#
# Figures are printed, never asserted. Everything it starts it stops by PID; its lab is
# removed on exit (a trap, and the lab's own watchdog if this script is killed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
IDLE=60
MANY="10 50"
PARTS=abcdefghijk
FLOOD=2000
ATTEMPTS=20
DHT_ROUNDS=5
while (($#)); do
    case $1 in
        --flood) FLOOD=${2:?}; shift 2 ;;
        --attempts) ATTEMPTS=${2:?}; shift 2 ;;
        --dht-rounds) DHT_ROUNDS=${2:?}; shift 2 ;;
        --idle-seconds) IDLE=${2:?}; shift 2 ;;
        --peers) MANY=${2:?}; shift 2 ;;
        --parts) PARTS=${2:?}; shift 2 ;;
        *) echo "bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ $IDLE =~ ^[0-9]+$ ]] && ((IDLE >= 1 && IDLE <= 600)) || { echo "bench/run.sh: --idle-seconds 1..600" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench/run.sh: run as root (network namespaces)" >&2; exit 2; }

LAB_SH=$ROOT/tests/lab/lab.sh
LAB=plxbr$(printf '%04x%04x' $RANDOM $RANDOM)
WORK=$(mktemp -d /tmp/plxbr-XXXXXX)
IDLE_PID= MANY_BOB= MANY_LAB=
cleanup() {
    local rc=$?
    [[ -n $IDLE_PID ]] && kill "$IDLE_PID" 2>/dev/null || true
    [[ -n $MANY_BOB ]] && kill "$MANY_BOB" 2>/dev/null || true
    [[ -n $MANY_LAB ]] && "$LAB_SH" down "$MANY_LAB" >/dev/null 2>&1 || true
    "$LAB_SH" down "$LAB" >/dev/null 2>&1 || true
    [[ -n ${K_LAB:-} ]] && "$LAB_SH" down "$K_LAB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building (release: the figures are for what users run)"
cargo build --release -p plexus-cli >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log"; exit 1; }
BIN=$ROOT/target/release/plexus
echo "    $($BIN --version), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"

if [[ $PARTS == *a* ]]; then
echo
echo "==> (a) NAT discovery per NAT type: plexus nat (full RFC 5780 profile) vs turnutils_natdiscovery -m -f"
"$ROOT/bench/nat.sh" "$BIN"

fi

if [[ $PARTS == *e* ]]; then
echo
echo "==> (e) component figures (release; cargo bench -p plexus --bench figures)"
# The plugin figure loads the fixture plugin from the same profile directory.
cargo build --release --workspace >"$WORK/build-ws.log" 2>&1 || { tail -n 30 "$WORK/build-ws.log"; exit 1; }
cargo bench -p plexus --bench figures 2>"$WORK/bench-figures.log" | sed 's/^/    /' ||
    { tail -n 30 "$WORK/bench-figures.log"; exit 1; }
fi

[[ $ATTEMPTS =~ ^[0-9]+$ ]] && ((ATTEMPTS >= 1 && ATTEMPTS <= 200)) || { echo "bench/run.sh: --attempts 1..200" >&2; exit 2; }
[[ $PARTS == *[bcdfghijk]* ]] || exit 0

echo
echo "==> starting a lab with mail ($LAB)"
"$LAB_SH" up --name "$LAB" --owner $$ >"$WORK/lab.log" 2>&1 || { tail -n 20 "$WORK/lab.log"; exit 1; }
read_lab() { # LAB: the lab's servers and mailbox pool as shell variables
python3 - "/run/plexus-lab/$1/lab.json" <<'EOF'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
m = d["mail"]
print("STUN=%s" % shlex.quote("%s:%s" % (d["stun"]["ips"][0], d["stun"]["port"])))
print("STUN_IP=%s" % shlex.quote(d["stun"]["ips"][0]))
print("STUN6=%s" % shlex.quote("[%s]:%s" % (d["stun6"]["ips"][0], d["stun6"]["port"])))
print("SMTPS6=%s IMAPS6=%s" % (shlex.quote("[%s]:%s" % (m["ip6"], m["smtps_port"])),
      shlex.quote("[%s]:%s" % (m["ip6"], m["imaps_port"]))))
t = d["turn"]
print("TURN=%s TURN_USER=%s TURN_PW=%s" % (shlex.quote("%s:%s" % (t["ip"], t["port"])),
      shlex.quote(t["user"]), shlex.quote(t["password"])))
print("SMTPS=%s IMAPS=%s MAIL_CA=%s" % (shlex.quote("%s:%s" % (m["ip"], m["smtps_port"])),
      shlex.quote("%s:%s" % (m["ip"], m["imaps_port"])), shlex.quote(m["ca_file"])))
pool = [a for a in m["accounts"] if a["address"].startswith("p")]
for i, a in enumerate(pool):
    print("MB_ADDR[%d]=%s MB_LOGIN[%d]=%s MB_PW[%d]=%s" % (i, shlex.quote(a["address"]), i,
          shlex.quote(a["login"]), i, shlex.quote(a["password"])))
EOF
}
eval "$(read_lab "$LAB")"
NEXT_MB=0

# Demo identities (keys must be 0600: git does not keep modes).
mkdir -p "$WORK/certs"
for f in alice bob; do
    install -m 0644 "$ROOT/certs/demo/$f.pem" "$WORK/certs/$f.pem"
    install -m 0600 "$ROOT/certs/demo/$f.key" "$WORK/certs/$f.key"
done
id_of() { case $1 in alice) echo alice@lab.example/home ;; bob) echo bob@lab.example/office ;; esac; }

# side_args WHO PEER MB PEER_MB TAG: the flat flags of one side (as tests/e2e/corridor.rs).
side_args() {
    local who=$1 peer=$2 mb=$3 pmb=$4 tag=$5
    (umask 077 && printf '%s' "${MB_PW[$mb]}" >"$WORK/$tag-$who.pw")
    ARGS=(--host-id "$(id_of "$who")" --peer-id "$(id_of "$peer")"
        --smime-cert "$WORK/certs/$who.pem" --smime-key "$WORK/certs/$who.key"
        --smime-peer "$WORK/certs/$peer.pem" --replay-state "$WORK/$tag-$who.replay"
        --email-smtps "$SMTPS" --email-imaps "$IMAPS" --email-login "${MB_LOGIN[$mb]}"
        --email-passwd-file "$WORK/$tag-$who.pw" --email-from "${MB_ADDR[$mb]}"
        --email-to "${MB_ADDR[$pmb]}" --email-ca "$MAIL_CA" --stun "$STUN"
        --exec-command /bin/true --log-level debug --log-file "$WORK/$tag-$who.log")
}
(umask 077 && printf '%s' "$TURN_PW" >"$WORK/turn.pw")
RELAY_ARGS=(--relay fallback --turn "$TURN" --turn-user "$TURN_USER" --turn-password-file "$WORK/turn.pw")
take_mb() { MB=$NEXT_MB; NEXT_MB=$((NEXT_MB + 1)); ((MB < ${#MB_ADDR[@]})) || { echo "mailbox pool used up" >&2; exit 1; }; }
wait_for_line() { # FILE TEXT PID: bounded (20 s)
    for _ in $(seq 1 200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# One STUN round trip from a site host, ms: the median of 7 binding requests (RFC 8489).
rtt_ms() { ip netns exec "$LAB-$1-h" python3 - "$STUN_IP" <<'EOF'
import os, socket, statistics, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
rtts = []
for _ in range(7):
    tid = os.urandom(12)
    t = time.perf_counter()
    s.sendto(struct.pack("!HHI", 1, 0, 0x2112A442) + tid, (sys.argv[1], 3478))
    try:
        while True:
            data, _ = s.recvfrom(2048)
            if data[8:20] == tid:
                rtts.append((time.perf_counter() - t) * 1000)
                break
    except socket.timeout:
        pass
print("%.3f" % (statistics.median(rtts) if rtts else 0))
EOF
}

if [[ $PARTS == *b* ]]; then
echo
echo "==> (b) time to connect per NAT pair: alice (a-X) invites bob (b-Y), e-mail mediator, ms"
echo "    breakdown from the inviter's line 'corridor A -> B (public C), discovery N ms, send N ms, wait N ms, handshake N ms, total N ms'."
echo "    bound = mail out + mail back + one STUN round trip + one handshake round trip. Mail out/back are"
echo "    measured in the same run: from the sender's log line just before it submits the message to the"
echo "    receiver's line after fetching and opening it (SMTP submission, delivery, IMAP IDLE wake-up, fetch,"
echo "    S/MIME open: generous to plexus). Round trips: median STUN binding round trip from each side."
echo "    method: the acceptor's plan; probes: birthday probes sent until one landed. The bound is that of a"
echo "    direct punch: a birthday pair's extra is its probing, a relayed pair's its relay round trip."
printf '    %-26s %-9s %6s %6s %6s %6s %6s %7s | %8s %9s %6s %7s %6s\n' pair method probes discov send wait hands total "mail out" "mail back" rtt bound ratio
TYPES=(none full address port symmetric)
for x in "${TYPES[@]}"; do
    for y in "${TYPES[@]}"; do
        tag="$x-$y"
        take_mb; mb_a=$MB; take_mb; mb_b=$MB
        side_args bob alice "$mb_b" "$mb_a" "$tag"
        # bob may relay (the symmetric pair needs it): he allocates for every invite.
        ip netns exec "$LAB-b-$y-h" "$BIN" accept --once "${ARGS[@]}" "${RELAY_ARGS[@]}" \
            >"$WORK/$tag-bob.out" 2>"$WORK/$tag-bob.err" &
        bob=$!
        if ! wait_for_line "$WORK/$tag-bob.log" "waiting for invites" $bob; then
            printf '    %-22s acceptor did not start: %s\n' "a-$x -> b-$y" "$(tail -n 1 "$WORK/$tag-bob.err")"
            kill $bob 2>/dev/null || true; wait $bob 2>/dev/null || true
            continue
        fi
        side_args alice bob "$mb_a" "$mb_b" "$tag"
        ip netns exec "$LAB-a-$x-h" "$BIN" invite --rendezvous-timeout 60 --relay fallback "${ARGS[@]}" \
            >"$WORK/$tag-alice.out" 2>"$WORK/$tag-alice.err" && arc=0 || arc=$?
        for _ in $(seq 1 200); do kill -0 $bob 2>/dev/null || break; sleep 0.1; done
        kill $bob 2>/dev/null || true
        wait $bob 2>/dev/null || true
        rtt=$(awk -v a="$(rtt_ms "a-$x")" -v b="$(rtt_ms "b-$y")" 'BEGIN { printf "%.3f", (a + b) / 2 }')
        python3 - "$WORK" "$tag" "a-$x -> b-$y" "$arc" "$rtt" <<'EOF' | tee -a "$WORK/pairs.txt"
import re, sys
work, tag, pair, arc, rtt = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
def lines(who):
    try:
        for l in open("%s/%s-%s.log" % (work, tag, who), errors="replace"):
            m = re.match(r"(\d+\.\d+) \w+ \S+: (.*)", l)
            if m:
                yield float(m.group(1)) * 1000, m.group(2)
    except OSError:
        return
def first(who, pat):
    return next((t for t, msg in lines(who) if re.search(pat, msg)), None)
def grab(who, pat):
    return next((m.group(1) for _, msg in lines(who) for m in [re.search(pat, msg)] if m), None)
out = open("%s/%s-alice.out" % (work, tag)).read()
m = re.search(r"discovery (\d+) ms, send (\d+) ms, wait (\d+) ms, handshake (\d+) ms, total (\d+) ms", out)
if arc != 0 or not m:
    err = open("%s/%s-alice.err" % (work, tag)).read().strip().splitlines()
    print("    %-26s failed (exit %d): %s" % (pair, arc, err[-1][:110] if err else "?"))
    sys.exit(0)
method = grab("alice", r"^accept from .*\): (.*)") or "?"
short = {"direct": "direct", "direct, acceptor punches at full TTL": "full-ttl",
         "relayed through TURN": "relay"}.get(method, "birthday" if method.startswith("birthday") else method)
probes = grab("alice", r"answered from \S+ after (\d+) probes") or grab("bob", r"answered from \S+ after (\d+) probes") or "-"
d, s, w, h, tot = map(int, m.groups())
t_send_a, t_recv_b = first("alice", r"^public endpoint "), first("bob", r"^invite from ")
# bob's last step before sealing the accept: the punch, or the plan when there is no punch.
t_send_b = first("bob", r"^punching toward ") or first("bob", r"^plan for ")
t_recv_a = first("alice", r"^accept from ")
out_ms, back_ms = t_recv_b - t_send_a, t_recv_a - t_send_b
bound = out_ms + back_ms + rtt + rtt
print("    %-26s %-9s %6s %6d %6d %6d %6d %7d | %8.0f %9.0f %6.2f %7.0f %5.2fx" % (pair, short, probes, d, s, w, h, tot, out_ms, back_ms, rtt, bound, tot / bound))
EOF
    done
done
python3 - "$WORK/pairs.txt" <<'EOF'
import re, sys
r = [float(l.rsplit(None, 1)[-1].rstrip("x")) for l in open(sys.argv[1]) if l.rstrip().endswith("x")]
if r:
    r.sort()
    print("    %d pairs connected; ratio to the bound: median %.2fx, min %.2fx, max %.2fx (target <= 1.25x)"
          % (len(r), r[len(r) // 2], r[0], r[-1]))
EOF

fi

if [[ $PARTS == *c* ]]; then
echo
echo "==> (c) an accepting instance idling for ${IDLE} s (release build, b-port site, e-mail mediator waiting in IMAP IDLE)"
take_mb; mb_a=$MB; take_mb; mb_b=$MB
side_args bob alice "$mb_b" "$mb_a" idle
# ip netns exec execs plexus, so $! is plexus's own PID.
ip netns exec "$LAB-b-port-h" "$BIN" accept "${ARGS[@]}" >"$WORK/idle.out" 2>"$WORK/idle.err" &
IDLE_PID=$!
if wait_for_line "$WORK/idle-bob.log" "waiting for invites" "$IDLE_PID"; then
    tck=$(getconf CLK_TCK)
    cpu() { awk '{print $14 + $15}' "/proc/$IDLE_PID/stat"; }
    c0=$(cpu)
    sleep "$IDLE"
    c1=$(cpu)
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$IDLE_PID/status")
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$IDLE_PID/status")
    wake=$(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$IDLE_PID/status")
    kill "$IDLE_PID" 2>/dev/null || true
    wait "$IDLE_PID" 2>/dev/null || true
    IDLE_PID=
    printf '    %-34s %12s\n' measure value
    printf '    %-34s %9d ms\n' "CPU before waiting (start, NAT, IMAP)" $((c0 * 1000 / tck))
    printf '    %-34s %9d ms\n' "CPU during ${IDLE} s of waiting" $(((c1 - c0) * 1000 / tck))
    printf '    %-34s %12s\n' "CPU share while waiting" "$(awk -v c=$((c1 - c0)) -v t="$tck" -v s="$IDLE" 'BEGIN { printf "%.3f %%", 100 * c / t / s }')"
    printf '    %-34s %9d (whole run)\n' "context switches, main thread" "$wake"
    printf '    %-34s %9.1f MB   (target <= 15 MB)\n' "peak RSS (VmHWM)" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')"
    printf '    %-34s %9.1f MB\n' "RSS at the end" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
else
    echo "    not measured: the accepting instance did not start: $(tail -n 1 "$WORK/idle.err")"
fi

fi

if [[ $PARTS == *d* ]]; then
echo
echo "==> (d) many peers inviting one acceptor at once (one fresh lab per count: N + 1 mailboxes)"
echo "    bob accepts with one --profile per peer, all through one mailbox; N inviters, each with its own"
echo "    identity and mailbox, spread over the 7 other non-symmetric sites, all started together."
printf '    %5s %10s %12s %10s %10s %10s\n' peers connected "all done ms" "min ms" "median ms" "max ms"
# many N: prints one row.
many() {
    local n=$1 lab=plxbm$(printf '%04x%04x' $RANDOM $RANDOM) dir=$WORK/many-$1 i
    mkdir -p "$dir"
    "$LAB_SH" up --name "$lab" --owner $$ >"$dir/lab.log" 2>&1 || { echo "    $n: lab failed"; return; }
    MANY_LAB=$lab
    eval "$(python3 - "/run/plexus-lab/$lab/lab.json" <<'EOF'
import json, shlex
import sys
d = json.load(open(sys.argv[1]))
pool = [a for a in d["mail"]["accounts"] if a["address"].startswith("p")]
for i, a in enumerate(pool):
    print("MB_ADDR[%d]=%s MB_LOGIN[%d]=%s MB_PW[%d]=%s" % (i, shlex.quote(a["address"]), i,
          shlex.quote(a["login"]), i, shlex.quote(a["password"])))
EOF
)"
    (umask 077 && printf '%s' "${MB_PW[0]}" >"$dir/bob.pw")
    local profiles=() sites=(a-none a-full a-address a-port b-none b-full b-address)
    for ((i = 1; i <= n; i++)); do
        local id="peer$i@lab.example/inv" base="peer$i@lab.example_inv"
        "$BIN" cert new --id "$id" --out "$dir/peer$i" >/dev/null 2>&1
        (umask 077 && printf '%s' "${MB_PW[$i]}" >"$dir/peer$i/mail.pw")
        cat >"$dir/bob-peer$i.yaml" <<EOF
host: { id: bob@lab.example/office, cert: $WORK/certs/bob.pem, key: $WORK/certs/bob.key }
peer: { id: $id, cert: peer$i/$base.pem }
stun: ["$STUN"]
replay: { state_file: bob-peer$i.replay }
mediator:
  email: { smtp: "$SMTPS", imap: "$IMAPS", login: "${MB_LOGIN[0]}", password: { file: bob.pw },
           from: "${MB_ADDR[0]}", to: "${MB_ADDR[$i]}", ca_file: "$MAIL_CA" }
executor: { command: { program: /bin/true } }
EOF
        cat >"$dir/peer$i/peer.yaml" <<EOF
host: { id: $id, cert: $base.pem, key: $base.key }
peer: { id: bob@lab.example/office, cert: $WORK/certs/bob.pem }
stun: ["$STUN"]
timeouts: { rendezvous_s: 180 }
replay: { state_file: replay.state }
mediator:
  email: { smtp: "$SMTPS", imap: "$IMAPS", login: "${MB_LOGIN[$i]}", password: { file: mail.pw },
           from: "${MB_ADDR[$i]}", to: "${MB_ADDR[0]}", ca_file: "$MAIL_CA" }
executor: { command: { program: /bin/true } }
EOF
        profiles+=(--profile "$dir/bob-peer$i.yaml")
    done
    ip netns exec "$lab-b-port-h" "$BIN" accept "${profiles[@]}" --log-level debug \
        --log-file "$dir/bob.log" >"$dir/bob.out" 2>"$dir/bob.err" &
    local bob=$! pids=()
    MANY_BOB=$bob
    if ! wait_for_line "$dir/bob.log" "waiting for invites" $bob; then
        printf '    %5d not measured: the acceptor did not start: %s\n' "$n" "$(tail -n 1 "$dir/bob.err")"
        kill $bob 2>/dev/null || true; wait $bob 2>/dev/null || true
        "$LAB_SH" down "$lab" >/dev/null 2>&1 || true
        return
    fi
    local t0 t1
    t0=$(date +%s%N)
    for ((i = 1; i <= n; i++)); do
        ip netns exec "$lab-${sites[$(((i - 1) % ${#sites[@]}))]}-h" "$BIN" invite --profile "$dir/peer$i/peer.yaml" \
            --log-level debug --log-file "$dir/peer$i.log" >"$dir/peer$i.out" 2>"$dir/peer$i.err" &
        pids+=($!)
    done
    local ok=0
    for p in "${pids[@]}"; do wait "$p" && ok=$((ok + 1)) || true; done
    t1=$(date +%s%N)
    kill $bob 2>/dev/null || true
    wait $bob 2>/dev/null || true
    MANY_BOB=
    python3 - "$dir" "$n" "$ok" $(((t1 - t0) / 1000000)) <<'EOF'
import re, statistics, sys
d, n, ok, all_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tot = []
for i in range(1, n + 1):
    m = re.search(r"total (\d+) ms", open("%s/peer%d.out" % (d, i)).read())
    if m:
        tot.append(int(m.group(1)))
if tot:
    print("    %5d %7d/%-3d %12d %10d %10d %10d" % (n, ok, n, all_ms, min(tot), statistics.median(tot), max(tot)))
else:
    print("    %5d %7d/%-3d %12d %10s %10s %10s" % (n, ok, n, all_ms, "-", "-", "-"))
errs = {}
for i in range(1, n + 1):
    e = open("%s/peer%d.err" % (d, i)).read().strip().splitlines()
    if e:
        errs[e[-1][:160]] = errs.get(e[-1][:160], 0) + 1
for e, c in sorted(errs.items(), key=lambda x: -x[1])[:3]:
    print("          %d inviter(s): %s" % (c, e))
EOF
    "$LAB_SH" down "$lab" >/dev/null 2>&1 || true
    MANY_LAB=
}
for n in $MANY; do many "$n"; done
fi

if [[ $PARTS == *f* ]]; then
echo
echo "==> (f) a flooded mailbox: $FLOOD forged plexus mails from the peer's address (and 400 received"
echo "    an hour ago) in bob's INBOX before he starts; alice then invites (release build, a-full -> b-port)"
take_mb; mb_a=$MB; take_mb; mb_b=$MB
seed() { # forged mails into bob's INBOX over IMAPS, from bob's host namespace
    ip netns exec "$LAB-b-port-h" python3 - "$IMAPS" "$MAIL_CA" "${MB_LOGIN[$mb_b]}" "${MB_PW[$mb_b]}" \
        "${MB_ADDR[$mb_a]}" "${MB_ADDR[$mb_b]}" "$FLOOD" <<'EOF'
import base64, imaplib, os, ssl, sys, time
hostport, ca, login, pw, frm, to, n = sys.argv[1:8]
host, port = hostport.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
m.login(login, pw)
def mail(i):
    body = base64.encodebytes(os.urandom(2800)).replace(b"\n", b"\r\n")
    return (b"From: <%s>\r\nTo: <%s>\r\nSubject: plexus rendezvous\r\nMessage-ID: <forged.%d@x>\r\n"
            b"MIME-Version: 1.0\r\nX-Plexus: 1\r\nContent-Type: application/pkcs7-mime; "
            b"smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            % (frm.encode(), to.encode(), i)) + body
t0 = time.time()
old = imaplib.Time2Internaldate(time.time() - 3600)
for i in range(400):
    m.append("INBOX", None, old, mail(i))
for i in range(int(n)):
    m.append("INBOX", None, None, mail(400 + i))
m.logout()
print("    seeded %d mails in %.1f s" % (400 + int(n), time.time() - t0))
EOF
}
# flood_run TAG: bob accepts once while alice invites; prints one row.
flood_run() {
    local tag=$1
    side_args bob alice "$mb_b" "$mb_a" flood
    ip netns exec "$LAB-b-port-h" "$BIN" accept --once "${ARGS[@]}" >"$WORK/flood-$tag.out" 2>"$WORK/flood-$tag.err" &
    local bob=$! hwm=0 t0 t1
    IDLE_PID=$bob
    if ! wait_for_line "$WORK/flood-bob.log" "waiting for invites" $bob; then
        echo "    $tag: the acceptor did not start: $(tail -n 1 "$WORK/flood-$tag.err")"; return
    fi
    side_args alice bob "$mb_a" "$mb_b" flood
    t0=$(date +%s%N)
    ip netns exec "$LAB-a-full-h" "$BIN" invite "${ARGS[@]}" >"$WORK/flood-alice-$tag.out" 2>&1 &
    local alice=$! k
    # Bounded: bob handles one invite and exits; alice gives up after her rendezvous timeout.
    for _ in $(seq 1 3000); do
        kill -0 $bob 2>/dev/null || break
        k=$(awk '/^VmHWM/ {print $2}' "/proc/$bob/status" 2>/dev/null || echo 0)
        ((${k:-0} > hwm)) && hwm=$k
        sleep 0.05
    done
    kill $bob 2>/dev/null || true
    wait $bob 2>/dev/null || true
    wait $alice 2>/dev/null || true
    t1=$(date +%s%N)
    IDLE_PID=
    local total refused
    total=$(grep -o 'total [0-9]* ms' "$WORK/flood-alice-$tag.out" | grep -o '[0-9]*' || echo -)
    refused=$(grep -c 'refused a rendezvous message' "$WORK/flood-bob.log" || true)
    printf '    %-22s %10s %14s %10s %12.1f\n' "$tag" "$total" "$(((t1 - t0) / 1000000))" "$refused" \
        "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')"
    mv "$WORK/flood-bob.log" "$WORK/flood-bob-$tag.log"
}
seed
printf '    %-22s %10s %14s %10s %12s\n' run "connect ms" "all done ms" "refused" "bob peak MB"
flood_run "first start"
flood_run "restart (same state)"
echo "    (connect: alice's invite-to-corridor time; refused: messages bob's core opened and refused in"
echo "     that run; mail received an hour ago is skipped unopened, refused UIDs are remembered on disk)"
fi

if [[ $PARTS == *i* ]]; then
echo
echo "==> (i) birthday probing: $ATTEMPTS attempts per pair, e-mail mediator, defaults (256 sockets, budget 2048, 400 probes/s)"
echo "    ok: connected on that one attempt; probes: sent by the easy side until one landed; hs: the"
echo "    handshake phase (accept received to corridor open: openers, probing, the authenticated exchange)"
printf '    %-30s %9s %13s %13s %13s %9s\n' pair "ok" "probes med" "probes p95" "hs ms med" "hs p95"
for pair in "a-symmetric b-port" "a-port b-symmetric"; do
    read -r inv acc <<<"$pair"
    : >"$WORK/bd-$inv.txt"
    # One pair of mailboxes for all attempts: each attempt consumes its own two messages.
    take_mb; mb_a=$MB; take_mb; mb_b=$MB
    for i in $(seq 1 "$ATTEMPTS"); do
        tag="bd-$inv-$i"
        side_args bob alice "$mb_b" "$mb_a" "$tag"
        ip netns exec "$LAB-$acc-h" "$BIN" accept --once "${ARGS[@]}" >"$WORK/$tag-bob.out" 2>"$WORK/$tag-bob.err" &
        bob=$!
        wait_for_line "$WORK/$tag-bob.log" "waiting for invites" $bob || { kill $bob 2>/dev/null || true; }
        side_args alice bob "$mb_a" "$mb_b" "$tag"
        ip netns exec "$LAB-$inv-h" "$BIN" invite --rendezvous-timeout 60 "${ARGS[@]}" \
            >"$WORK/$tag-alice.out" 2>"$WORK/$tag-alice.err" && arc=0 || arc=$?
        for _ in $(seq 1 200); do kill -0 $bob 2>/dev/null || break; sleep 0.1; done
        kill $bob 2>/dev/null || true
        wait $bob 2>/dev/null || true
        probes=$(grep -ho 'after [0-9]* probes' "$WORK/$tag-alice.log" "$WORK/$tag-bob.log" 2>/dev/null | grep -o '[0-9]*' | head -n 1)
        hs=$(grep -o 'handshake [0-9]* ms' "$WORK/$tag-alice.out" | grep -o '[0-9]*' || true)
        echo "$arc ${probes:--} ${hs:--}" >>"$WORK/bd-$inv.txt"
    done
    python3 - "$WORK/bd-$inv.txt" "$inv -> $acc" <<'PYEOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in rows if r[0] == "0" and r[1] != "-" and r[2] != "-"]
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))] if v else float("nan")
probes = [int(r[1]) for r in ok]
hs = [int(r[2]) for r in ok]
print("    %-30s %5d/%-3d %13s %13s %13s %9s" % (sys.argv[2], len(ok), len(rows),
      q(probes, 0.5), q(probes, 0.95), q(hs, 0.5), q(hs, 0.95)))
PYEOF
done
echo "    (expected misses per attempt: (1 - 256/64512)^k for k probes after the openers; 1,024 probes: 1.7 %)"
fi

if [[ $PARTS == *h* ]]; then
echo
echo "==> (h) time to connect through the DHT (dht plugin, 30-node mainline testnet in the lab, poll"
echo "    1 s, request timeout 250 ms) next to e-mail, same lab, same run; alice (a-port) invites bob (b-port), ms"
cargo build --release -p plexus-cli -p plexus-dht >"$WORK/build-dht.log" 2>&1 || { tail -n 30 "$WORK/build-dht.log"; exit 1; }
ip netns exec "$LAB-dht" "$ROOT/target/release/plexus-dht-testnet" --ips 203.0.113.130-203.0.113.159 \
    --port 6881 >"$WORK/testnet.out" 2>"$WORK/testnet.err" &
for _ in $(seq 1 100); do grep -q '^ready' "$WORK/testnet.out" && break; sleep 0.1; done
grep -q '^ready 30' "$WORK/testnet.out" || { echo "    the testnet did not start: $(tail -n 2 "$WORK/testnet.err")"; exit 1; }
# EC identities (plexus cert new): the channel secret is the core's ECDH. One replay state
# per side across rounds, as in real use: an earlier round's messages are still stored in
# the DHT (and fresh) when the next round starts, and must be refused as replays.
for who in alice bob; do
    "$BIN" cert new --id "$who@lab.example/dht" --out "$WORK/dht" >/dev/null 2>&1
done
dht_profile() { # WHO PEER ROUND
    local who=$1 peer=$2 r=$3
    cat >"$WORK/dht/$who-$r.yaml" <<EOF
host: { id: $who@lab.example/dht, cert: $who@lab.example_dht.pem, key: $who@lab.example_dht.key }
peer: { id: $peer@lab.example/dht, cert: $peer@lab.example_dht.pem }
stun: ["$STUN"]
timeouts: { rendezvous_s: 60 }
replay: { state_file: $who.replay }
mediator:
  plugin:
    path: $ROOT/target/release/libplexus_dht.so
    to: $peer@lab.example/dht
    settings:
      bootstrap: ["203.0.113.130:6881", "203.0.113.131:6881", "203.0.113.132:6881"]
      poll_interval_ms: 1000
      max_poll_interval_ms: 1000
      request_timeout_ms: 250
executor: { command: { program: /bin/true } }
EOF
}
# one_run KIND ROUND: bob accepts once, alice invites; the logs stay in $WORK/h-KIND-ROUND-*.
one_run() {
    local kind=$1 r=$2 tag="h-$1-$2" bob arc
    if [[ $kind == dht ]]; then
        dht_profile bob alice "$r"; dht_profile alice bob "$r"
        ip netns exec "$LAB-b-port-h" "$BIN" accept --once --profile "$WORK/dht/bob-$r.yaml" --log-level debug \
            --log-file "$WORK/$tag-bob.log" >"$WORK/$tag-bob.out" 2>"$WORK/$tag-bob.err" &
    else
        take_mb; mb_a=$MB; take_mb; mb_b=$MB
        side_args bob alice "$mb_b" "$mb_a" "$tag"
        ip netns exec "$LAB-b-port-h" "$BIN" accept --once "${ARGS[@]}" >"$WORK/$tag-bob.out" 2>"$WORK/$tag-bob.err" &
    fi
    bob=$!
    if ! wait_for_line "$WORK/$tag-bob.log" "waiting for invites" $bob; then
        echo "    $tag: the acceptor did not start: $(tail -n 1 "$WORK/$tag-bob.err")"
        kill $bob 2>/dev/null || true; wait $bob 2>/dev/null || true; return
    fi
    # The acceptor polls once a second: start the invite at a random phase of its poll.
    sleep "0.$((RANDOM % 10))"
    if [[ $kind == dht ]]; then
        ip netns exec "$LAB-a-port-h" "$BIN" invite --profile "$WORK/dht/alice-$r.yaml" --log-level debug \
            --log-file "$WORK/$tag-alice.log" >"$WORK/$tag-alice.out" 2>"$WORK/$tag-alice.err" && arc=0 || arc=$?
    else
        side_args alice bob "$mb_a" "$mb_b" "$tag"
        ip netns exec "$LAB-a-port-h" "$BIN" invite --rendezvous-timeout 60 "${ARGS[@]}" \
            >"$WORK/$tag-alice.out" 2>"$WORK/$tag-alice.err" && arc=0 || arc=$?
    fi
    for _ in $(seq 1 200); do kill -0 $bob 2>/dev/null || break; sleep 0.1; done
    kill $bob 2>/dev/null || true
    wait $bob 2>/dev/null || true
    echo "$kind $r $arc" >>"$WORK/h-runs.txt"
}
for r in $(seq 1 "$DHT_ROUNDS"); do one_run email "$r"; one_run dht "$r"; done
python3 - "$WORK" <<'EOF'
import re, statistics, sys
work = sys.argv[1]
def lines(tag, who):
    try:
        for l in open("%s/%s-%s.log" % (work, tag, who), errors="replace"):
            m = re.match(r"(\d+\.\d+) \w+ \S+: (.*)", l)
            if m:
                yield float(m.group(1)) * 1000, m.group(2)
    except OSError:
        return
def first(tag, who, pat, group=None):
    for t, msg in lines(tag, who):
        m = re.search(pat, msg)
        if m:
            return t if group is None else float(m.group(group))
    return None
rows = {"email": [], "dht": []}
print("    %-6s %5s %6s %7s %6s %6s %7s | %9s %9s %9s %9s" % ("kind", "round", "discov", "send", "wait",
      "hands", "total", "out pub", "out find", "back pub", "back find"))
for line in open(work + "/h-runs.txt"):
    kind, r, arc = line.split()
    tag = "h-%s-%s" % (kind, r)
    out = open("%s/%s-alice.out" % (work, tag)).read()
    m = re.search(r"discovery (\d+) ms, send (\d+) ms, wait (\d+) ms, handshake (\d+) ms, total (\d+) ms", out)
    if arc != "0" or not m:
        err = open("%s/%s-alice.err" % (work, tag)).read().strip().splitlines()
        print("    %-6s %5s failed (exit %s): %s" % (kind, r, arc, err[-1] if err else "?"))
        continue
    d, s, w, h, tot = map(int, m.groups())
    rows[kind].append((d, s, w, h, tot))
    if kind == "dht":
        # publish: the plugin's own figure; find: from the sender's "published" line to the
        # receiver's "found" line (polling, lookups, reassembly, decryption).
        # The same message id on both sides: an earlier round's items are found (and refused
        # by the core as replays) first.
        def trip(frm, to):
            pub = next(((t, m) for t, m in lines(tag, frm) if m.startswith("dht: published message ")), None)
            if not pub:
                return None, None
            mid = pub[1].split()[3]
            found = first(tag, to, r"^dht: found message " + mid)
            ms = float(re.search(r" in (\d+) ms", pub[1]).group(1))
            return ms, (found - pub[0]) if found else None
        pub_a, find_b = trip("alice", "bob")
        pub_b, find_a = trip("bob", "alice")
    else:
        # mail: submission is inside "send"; delivery to fetch and open is the "find".
        pub_a, pub_b = s, None
        find_b = first(tag, "bob", r"^invite from ") - first(tag, "alice", r"^invite sent ")
        find_a = first(tag, "alice", r"^accept from ") - first(tag, "bob", r"^accept sent ")
    f = lambda x: "%9.0f" % x if x is not None else "%9s" % "-"
    print("    %-6s %5s %6d %7d %6d %6d %7d | %s %s %s %s" % (kind, r, d, s, w, h, tot, f(pub_a), f(find_b), f(pub_b), f(find_a)))
for kind, v in rows.items():
    if v:
        t = sorted(x[4] for x in v)
        print("    %s: %d/%d connected; total median %d ms, min %d, max %d" % (kind, len(v), len(v), statistics.median(t), t[0], t[-1]))
EOF
echo "    (out = alice's invite to bob, back = bob's accept to alice; pub = storing the items (dht) or"
echo "     submitting the mail (email, inside send); find = from the sender's log line after sending to the"
echo "     receiver's line after opening: dht polling + lookups + reassembly, or mail delivery + IDLE + fetch)"
fi

if [[ $PARTS == *j* ]]; then
echo
echo "==> (j) TURN relay: a-symmetric relaying through coturn to a-none, next to direct"
PLEXUS_LAB=$LAB cargo bench -p plexus --bench relay 2>"$WORK/bench-relay.log" | grep -v '^$' ||
    { tail -n 30 "$WORK/bench-relay.log"; exit 1; }
fi

if [[ $PARTS == *g* ]]; then
echo
echo "==> (g) the tunnel plugin on a-port -> b-port: tunnel vs ssh -L vs plain TCP over a port forward"
"$ROOT/bench/tunnel.sh" --lab "$LAB"
fi

if [[ $PARTS == *k* ]]; then
echo
echo "==> (k) IPv6: the same pairs of sites over IPv6 and over IPv4, e-mail mediator, ms"
# 78 sessions take 156 fresh mailboxes: a lab of its own (same addresses, a full pool).
K_LAB=${LAB}k
"$LAB_SH" up --name "$K_LAB" --owner $$ >"$WORK/lab-k.log" 2>&1 || { tail -n 20 "$WORK/lab-k.log"; exit 1; }
eval "$(read_lab "$K_LAB")"
NEXT_MB=0
echo "    v6-fw-*: IPv4 port-restricted NAT, IPv6 global /64 behind a stateful firewall; v6-symmetric:"
echo "    IPv4 symmetric NAT, IPv6 firewall; v6-only: no IPv4; v6-nat66: IPv4 port NAT, IPv6 NAT66;"
echo "    a-port: IPv4 only. Both sides name an IPv4 and an IPv6 STUN server; --family picks what is"
echo "    tried (auto: both at once, IPv6 preferred). No relay is configured: what connects is direct."
# v6_mail: the mail host's IPv6 address in ARGS (a site without IPv4 reaches it so).
v6_mail() {
    local i
    for i in "${!ARGS[@]}"; do
        case ${ARGS[i]} in
            --email-smtps) ARGS[i + 1]=$SMTPS6 ;;
            --email-imaps) ARGS[i + 1]=$IMAPS6 ;;
        esac
    done
}
# k_run TAG X Y FAMILY: alice (site X) invites bob (site Y); prints "TOTAL HANDSHAKE METHOD FAMILY" or "failed".
k_run() {
    local tag=$1 x=$2 y=$3 fam=$4 mb_a mb_b arc
    take_mb; mb_a=$MB; take_mb; mb_b=$MB
    side_args bob alice "$mb_b" "$mb_a" "$tag"
    [[ $y == v6-only ]] && v6_mail
    local bob_args=("${ARGS[@]}" --stun "$STUN6" --family "$fam")
    ip netns exec "$K_LAB-$y-h" "$BIN" accept --once "${bob_args[@]}" \
        >"$WORK/$tag-bob.out" 2>"$WORK/$tag-bob.err" &
    local bob=$!
    if ! wait_for_line "$WORK/$tag-bob.log" "waiting for invites" $bob; then
        kill $bob 2>/dev/null || true; wait $bob 2>/dev/null || true
        echo "failed - - -"; return
    fi
    side_args alice bob "$mb_a" "$mb_b" "$tag"
    [[ $x == v6-only ]] && v6_mail
    local alice_args=("${ARGS[@]}" --stun "$STUN6" --family "$fam")
    ip netns exec "$K_LAB-$x-h" "$BIN" invite --rendezvous-timeout 30 --handshake-timeout 5000 "${alice_args[@]}" \
        >"$WORK/$tag-alice.out" 2>"$WORK/$tag-alice.err" && arc=0 || arc=$?
    for _ in $(seq 1 100); do kill -0 $bob 2>/dev/null || break; sleep 0.1; done
    kill $bob 2>/dev/null || true
    wait $bob 2>/dev/null || true
    python3 - "$WORK" "$tag" "$arc" <<'EOF'
import re, sys
work, tag, arc = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = open("%s/%s-alice.out" % (work, tag)).read()
m = re.search(r"handshake (\d+) ms, total (\d+) ms", out)
try:
    log = open("%s/%s-alice.log" % (work, tag), errors="replace").read()
except OSError:
    log = ""
if arc != 0 or not m:
    print("failed - - -")
    sys.exit(0)
peer = re.search(r"corridor \S+ -> (\S+)", out)
fam = "IPv6" if peer and peer.group(1).startswith("[") else "IPv4"
plan = re.search(r"accept from .*\): (.*)", log)
method = "birthday" if plan and "birthday" in plan.group(1) else "direct"
print("%s %s %s %s" % (m.group(2), m.group(1), method, fam))
EOF
}
echo
echo "    time to connect, the same pair over each family (alice -> bob), 3 rounds each, total/handshake ms"
printf '    %-24s %-26s %-26s %-40s\n' pair "--family ipv4" "--family ipv6" "auto (winner)"
for pair in "v6-fw-a v6-fw-b" "v6-symmetric v6-fw-b" "v6-nat66 v6-fw-a"; do
    read -r x y <<<"$pair"
    row=()
    for fam in ipv4 ipv6 auto; do
        cells=()
        for r in 1 2 3; do
            read -r tot hs method won <<<"$(k_run "k-$x-$y-$fam-$r" "$x" "$y" "$fam")"
            if [[ $tot == failed ]]; then cells+=("fail")
            elif [[ $fam == auto ]]; then cells+=("$tot/$hs $won")
            else cells+=("$tot/$hs"); fi
        done
        row+=("$(IFS=,; echo "${cells[*]}")")
    done
    printf '    %-24s %-26s %-26s %-40s\n' "$x -> $y" "${row[0]}" "${row[1]}" "${row[2]}"
done
echo
echo "    ordered pairs of {v6-fw-a, v6-fw-b, v6-symmetric, v6-only, v6-nat66, a-port} connecting without a relay"
SITES_K=(v6-fw-a v6-fw-b v6-symmetric v6-only v6-nat66 a-port)
printf '    %-28s %-24s %-24s\n' "inviter -> acceptor" "IPv4 only" "IPv4 and IPv6"
k_total=0 k4=0 k4bd=0 kall=0 kallv6=0 kallbd=0
for x in "${SITES_K[@]}"; do
    for y in "${SITES_K[@]}"; do
        [[ $x == "$y" ]] && continue
        k_total=$((k_total + 1))
        read -r tot _ method won <<<"$(k_run "k-all-$x-$y-ipv4" "$x" "$y" ipv4)"
        c4="-"
        if [[ $tot != failed ]]; then
            k4=$((k4 + 1)); [[ $method == birthday ]] && k4bd=$((k4bd + 1))
            c4="$method $tot ms"
        fi
        read -r tot _ method won <<<"$(k_run "k-all-$x-$y-auto" "$x" "$y" auto)"
        call="-"
        if [[ $tot != failed ]]; then
            kall=$((kall + 1)); [[ $method == birthday ]] && kallbd=$((kallbd + 1))
            [[ $won == IPv6 ]] && kallv6=$((kallv6 + 1))
            call="$won $method $tot ms"
        fi
        printf '    %-28s %-24s %-24s\n' "$x -> $y" "$c4" "$call"
    done
done
printf '    %-16s %d/%d connected (%d of them by birthday port prediction)\n' "IPv4 only" "$k4" "$k_total" "$k4bd"
printf '    %-16s %d/%d connected (%d over IPv6; %d by birthday port prediction)\n' "IPv4 and IPv6" "$kall" "$k_total" "$kallv6" "$kallbd"
"$LAB_SH" down "$K_LAB" >/dev/null 2>&1 || true
fi
