#!/usr/bin/env bash
# plexus benchmarks, in one run, as root (network namespaces; the NAT lab):
#   (a) NAT discovery time per NAT type next to coturn's turnutils_natdiscovery (bench/nat.sh)
#   (b) time to connect per NAT pair, with its breakdown, next to the lab's lower bound
#   (c) CPU time and peak RSS of an accepting instance idling for 60 s
#   (d) many peers inviting one acceptor at once (not measured yet: see its line)
#
#   bench/run.sh [--idle-seconds N]      (release build; built when missing or stale)
#
# Figures are printed, never asserted. Everything it starts it stops by PID; its lab is
# removed on exit (a trap, and the lab's own watchdog if this script is killed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
IDLE=60
while (($#)); do
    case $1 in
        --idle-seconds) IDLE=${2:?}; shift 2 ;;
        *) echo "bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ $IDLE =~ ^[0-9]+$ ]] && ((IDLE >= 1 && IDLE <= 600)) || { echo "bench/run.sh: --idle-seconds 1..600" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench/run.sh: run as root (network namespaces)" >&2; exit 2; }

LAB_SH=$ROOT/tests/lab/lab.sh
LAB=plxbr$(printf '%04x%04x' $RANDOM $RANDOM)
WORK=$(mktemp -d /tmp/plxbr-XXXXXX)
IDLE_PID=
cleanup() {
    local rc=$?
    [[ -n $IDLE_PID ]] && kill "$IDLE_PID" 2>/dev/null || true
    "$LAB_SH" down "$LAB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building (release: the figures are for what users run)"
cargo build --release -p plexus >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log"; exit 1; }
BIN=$ROOT/target/release/plexus
echo "    $($BIN --version), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"

echo
echo "==> (a) NAT discovery per NAT type: plexus nat (full RFC 5780 profile) vs turnutils_natdiscovery -m -f"
"$ROOT/bench/nat.sh" "$BIN"

echo
echo "==> starting a lab with mail ($LAB)"
"$LAB_SH" up --name "$LAB" --owner $$ >"$WORK/lab.log" 2>&1 || { tail -n 20 "$WORK/lab.log"; exit 1; }
eval "$(python3 - "/run/plexus-lab/$LAB/lab.json" <<'EOF'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
m = d["mail"]
print("STUN=%s" % shlex.quote("%s:%s" % (d["stun"]["ips"][0], d["stun"]["port"])))
print("STUN_IP=%s" % shlex.quote(d["stun"]["ips"][0]))
print("SMTPS=%s IMAPS=%s MAIL_CA=%s" % (shlex.quote("%s:%s" % (m["ip"], m["smtps_port"])),
      shlex.quote("%s:%s" % (m["ip"], m["imaps_port"])), shlex.quote(m["ca_file"])))
pool = [a for a in m["accounts"] if a["address"].startswith("p")]
for i, a in enumerate(pool):
    print("MB_ADDR[%d]=%s MB_LOGIN[%d]=%s MB_PW[%d]=%s" % (i, shlex.quote(a["address"]), i,
          shlex.quote(a["login"]), i, shlex.quote(a["password"])))
EOF
)"
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

echo
echo "==> (b) time to connect per NAT pair: alice (a-X) invites bob (b-Y), e-mail mediator, ms"
echo "    breakdown from the inviter's line 'corridor A -> B (public C), discovery N ms, send N ms, wait N ms, handshake N ms, total N ms'."
echo "    bound = mail out + mail back + one STUN round trip + one handshake round trip. Mail out/back are"
echo "    measured in the same run: from the sender's log line just before it submits the message to the"
echo "    receiver's line after fetching and opening it (SMTP submission, delivery, IMAP IDLE wake-up, fetch,"
echo "    S/MIME open: generous to plexus). Round trips: median STUN binding round trip from each side."
printf '    %-22s %6s %6s %6s %6s %7s | %8s %9s %6s %7s %6s\n' pair discov send wait hands total "mail out" "mail back" rtt bound ratio
TYPES=(none full address port)
for x in "${TYPES[@]}"; do
    for y in "${TYPES[@]}"; do
        tag="$x-$y"
        take_mb; mb_a=$MB; take_mb; mb_b=$MB
        side_args bob alice "$mb_b" "$mb_a" "$tag"
        ip netns exec "$LAB-b-$y-h" "$BIN" accept --once "${ARGS[@]}" >"$WORK/$tag-bob.out" 2>"$WORK/$tag-bob.err" &
        bob=$!
        if ! wait_for_line "$WORK/$tag-bob.log" "waiting for invites" $bob; then
            printf '    %-22s acceptor did not start: %s\n' "a-$x -> b-$y" "$(tail -n 1 "$WORK/$tag-bob.err")"
            kill $bob 2>/dev/null || true; wait $bob 2>/dev/null || true
            continue
        fi
        side_args alice bob "$mb_a" "$mb_b" "$tag"
        ip netns exec "$LAB-a-$x-h" "$BIN" invite --rendezvous-timeout 60 "${ARGS[@]}" \
            >"$WORK/$tag-alice.out" 2>"$WORK/$tag-alice.err" && arc=0 || arc=$?
        for _ in $(seq 1 200); do kill -0 $bob 2>/dev/null || break; sleep 0.1; done
        kill $bob 2>/dev/null || true
        wait $bob 2>/dev/null || true
        rtt=$(awk -v a="$(rtt_ms "a-$x")" -v b="$(rtt_ms "b-$y")" 'BEGIN { printf "%.3f", (a + b) / 2 }')
        python3 - "$WORK" "$tag" "a-$x -> b-$y" "$arc" "$rtt" <<'EOF' | tee -a "$WORK/pairs.txt"
import re, sys
work, tag, pair, arc, rtt = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
def first(who, pat):
    for l in open("%s/%s-%s.log" % (work, tag, who), errors="replace"):
        m = re.match(r"(\d+\.\d+) \w+ \S+: (.*)", l)
        if m and re.search(pat, m.group(2)):
            return float(m.group(1)) * 1000
    return None
out = open("%s/%s-alice.out" % (work, tag)).read()
m = re.search(r"discovery (\d+) ms, send (\d+) ms, wait (\d+) ms, handshake (\d+) ms, total (\d+) ms", out)
if arc != 0 or not m:
    err = open("%s/%s-alice.err" % (work, tag)).read().strip().splitlines()
    print("    %-22s failed (exit %d): %s" % (pair, arc, err[-1] if err else "?"))
    sys.exit(0)
d, s, w, h, tot = map(int, m.groups())
t_send_a, t_recv_b = first("alice", r"^public endpoint "), first("bob", r"^invite from ")
t_send_b, t_recv_a = first("bob", r"^punching toward "), first("alice", r"^accept from ")
out_ms, back_ms = t_recv_b - t_send_a, t_recv_a - t_send_b
bound = out_ms + back_ms + rtt + rtt
print("    %-22s %6d %6d %6d %6d %7d | %8.0f %9.0f %6.2f %7.0f %5.2fx" % (pair, d, s, w, h, tot, out_ms, back_ms, rtt, bound, tot / bound))
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

echo
echo "==> (d) 10 and 50 peers inviting one acceptor at once"
echo "    not measured: an acceptor serving several peers (one --profile per peer) landed just before this"
echo "    benchmark was written and it does not drive it yet: it needs N identities and profiles, N+1 lab"
echo "    mailboxes (the lab's pool has 60, of which this run uses 34) and N concurrent inviters."
