#!/usr/bin/env bash
# (g) The tunnel executor plugin on the lab's port-restricted pair (alice at a-port
# invites, bob at b-port accepts), next to what a user would otherwise do:
#   tunnel   alice's 127.0.0.1 listeners -> QUIC on the punched path -> bob's services
#   ssh -L   ssh port forwarding to the same services through a TCP port forward
#            (DNAT) on bob's NAT: what people set up without plexus
#   plain    plain TCP over that port forward (in the lab bound only by the CPU)
# Measures: iperf3 TCP throughput both directions, the round-trip time of a 64-byte
# request/response (TCP_NODELAY, median and 99th percentile of 2000), CPU seconds
# per GB and peak RSS of each plexus process running the plugin.
#
#   bench/tunnel.sh [--lab NAME] [--seconds N]
#   (release build; without --lab it starts and removes its own lab)
#
# Figures are printed, never asserted. Everything it starts it stops by PID, and the
# DNAT table it adds to bob's router is deleted on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
LAB= SECS=5
while (($#)); do
    case $1 in
        --lab) LAB=${2:?}; shift 2 ;;
        --seconds) SECS=${2:?}; shift 2 ;;
        *) echo "bench/tunnel.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ $SECS =~ ^[0-9]+$ ]] && ((SECS >= 1 && SECS <= 60)) || { echo "bench/tunnel.sh: --seconds 1..60" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench/tunnel.sh: run as root (network namespaces)" >&2; exit 2; }
for tool in iperf3 ssh ssh-keygen /usr/sbin/sshd; do
    command -v "$tool" >/dev/null || { echo "bench/tunnel.sh: $tool missing (tests/lab/install-deps.sh)" >&2; exit 2; }
done

LAB_SH=$ROOT/tests/lab/lab.sh
WORK=$(mktemp -d /tmp/plxbt-XXXXXX)
PIDS=() OWN_LAB= BR=
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ -n $BR ]] && ip netns exec "$BR" nft delete table ip plxbench 2>/dev/null || true
    [[ -n $OWN_LAB ]] && "$LAB_SH" down "$LAB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release -p plexus-cli -p plexus-file -p plexus-tunnel >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log"; exit 1; }
BIN=$ROOT/target/release/plexus
if [[ -z $LAB ]]; then
    LAB=plxbt$(printf '%04x' $RANDOM)
    OWN_LAB=1
    "$LAB_SH" up --name "$LAB" --owner $$ --no-mail >"$WORK/lab.log" 2>&1 || { tail -n 20 "$WORK/lab.log"; exit 1; }
fi
eval "$(python3 - "/run/plexus-lab/$LAB/lab.json" <<'EOF'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
a, b = d["sites"]["a-port"], d["sites"]["b-port"]
q = shlex.quote
print("STUN=%s A=%s B=%s BR=%s B_IP=%s B_PUB=%s" % (
    q("%s:%s" % (d["stun"]["ips"][0], d["stun"]["port"])), q(a["host_netns"]), q(b["host_netns"]),
    q(b["router_netns"]), q(b["host_ip"]), q(b["public_ip"])))
EOF
)"

# --- bob's services: iperf3, a TCP echo, sshd (all on every address of bob's host).
ip netns exec "$B" iperf3 -s -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!)
ip netns exec "$B" python3 - >"$WORK/echo.log" 2>&1 <<'EOF' &
import socket, socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            d = self.request.recv(65536)
            if not d:
                return
            self.request.sendall(d)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("0.0.0.0", 7007), Echo).serve_forever()
EOF
PIDS+=($!)
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
printf '[%s]:2022 %s\n' "$B_PUB" "$(cat "$WORK/host_key.pub")" >"$WORK/known_hosts"
cat >"$WORK/sshd_config" <<EOF
ListenAddress 0.0.0.0:22
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PidFile $WORK/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
EOF
mkdir -p /run/sshd
ip netns exec "$B" /usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
PIDS+=($!)

# --- the port forward on bob's NAT (own table, deleted on exit).
ip netns exec "$BR" nft -f - <<EOF
table ip plxbench {
  chain pre { type nat hook prerouting priority dstnat - 1; policy accept;
    iifname "wan" ip daddr $B_PUB tcp dport 2022 dnat to $B_IP:22
    iifname "wan" ip daddr $B_PUB tcp dport { 5201, 7007 } dnat to $B_IP
  }
}
EOF

# --- the tunnel: profiles for the file mediator and the tunnel plugin.
mkdir -p "$WORK/certs" "$WORK/shared"
for f in alice bob; do
    install -m 0644 "$ROOT/certs/demo/$f.pem" "$WORK/certs/$f.pem"
    install -m 0600 "$ROOT/certs/demo/$f.key" "$WORK/certs/$f.key"
done
profile() { # WHO PEER SERVICES
    local who=$1 peer=$2 id_me id_peer
    id_me=$([[ $who == alice ]] && echo alice@lab.example/home || echo bob@lab.example/office)
    id_peer=$([[ $who == alice ]] && echo bob@lab.example/office || echo alice@lab.example/home)
    cat >"$WORK/$who.yaml" <<EOF
host: { id: "$id_me", cert: certs/$who.pem, key: certs/$who.key }
peer: { id: "$id_peer", cert: certs/$peer.pem }
stun: ["$STUN"]
timeouts: { rendezvous_s: 60 }
replay: { state_file: $who.replay }
mediator:
  plugin:
    name: file
    to: "$peer@lab.example"
    settings: { dir: "$WORK/shared", address: "$who@lab.example", poll_interval_ms: 50 }
executor:
  plugin:
    name: tunnel
    settings:
$3
      stop_file: "$WORK/stop"
EOF
}
profile bob alice '      forward: [{ name: iperf, to: "127.0.0.1:5201" }, { name: echo, to: "127.0.0.1:7007" }]'
profile alice bob '      listen: [{ name: iperf, on: "127.0.0.1:15201" }, { name: echo, on: "127.0.0.1:17007" }]'
wait_for_line() { # FILE TEXT PID: bounded (60 s)
    for _ in $(seq 1 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
ip netns exec "$B" "$BIN" accept --once --profile "$WORK/bob.yaml" --log-file "$WORK/bob.log" >"$WORK/bob.out" 2>&1 &
BOB=$!
PIDS+=($BOB)
wait_for_line "$WORK/bob.log" "waiting for invites" $BOB || { echo "    bob did not start: $(tail -n 3 "$WORK/bob.out")"; exit 1; }
ip netns exec "$A" "$BIN" invite --profile "$WORK/alice.yaml" --log-file "$WORK/alice.log" >"$WORK/alice.out" 2>&1 &
ALICE=$!
PIDS+=($ALICE)
wait_for_line "$WORK/alice.log" "authenticated QUIC connection" $ALICE ||
    { echo "    the tunnel did not come up: $(tail -n 3 "$WORK/alice.out")"; exit 1; }

# --- ssh -L through the port forward.
ip netns exec "$A" ssh -F /dev/null -N -p 2022 -i "$WORK/client_key" -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$WORK/known_hosts" -o ExitOnForwardFailure=yes \
    -L 127.0.0.1:25201:127.0.0.1:5201 -L 127.0.0.1:27007:127.0.0.1:7007 "root@$B_PUB" 2>"$WORK/ssh.log" &
SSH=$!
PIDS+=($SSH)
ready=0
for _ in $(seq 1 100); do
    ip netns exec "$A" bash -c 'exec 3<>/dev/tcp/127.0.0.1/27007' 2>/dev/null && { ready=1; break; }
    kill -0 $SSH 2>/dev/null || break
    sleep 0.1
done
((ready)) || { echo "    ssh -L did not come up: $(tail -n 3 "$WORK/ssh.log")"; exit 1; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hwm_mb() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# iperf ADDR PORT [-R]: "Mbit/s bytes" received.
iperf() {
    ip netns exec "$A" iperf3 -c "$1" -p "$2" -t "$SECS" -J ${3:-} >"$WORK/iperf.json" 2>&1 || true
    python3 - "$WORK/iperf.json" <<'EOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))["end"]["sum_received"]
    print("%.0f %d" % (s["bits_per_second"] / 1e6, s["bytes"]))
except Exception:
    print("failed 0")
EOF
}
rtt() { # ADDR PORT: "p50 p99" in microseconds
    ip netns exec "$A" python3 - "$1" "$2" <<'EOF'
import socket, statistics, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64
def one():
    t = time.perf_counter()
    s.sendall(msg)
    got = 0
    while got < len(msg):
        d = s.recv(4096)
        if not d:
            raise SystemExit("closed")
        got += len(d)
    return (time.perf_counter() - t) * 1e6
for _ in range(200):
    one()
v = sorted(one() for _ in range(2000))
print("%.0f %.0f" % (statistics.median(v), v[int(len(v) * 0.99)]))
EOF
}

HZ=$(getconf CLK_TCK)
echo "    iperf3 -t $SECS (alice -> bob, then -R bob -> alice); round trip of 64 bytes, 2000 times"
printf '    %-26s %12s %12s %10s %10s\n' path "a->b Mbit/s" "b->a Mbit/s" "rtt p50 us" "rtt p99 us"
declare -A P50
for path in tunnel ssh plain; do
    case $path in
        tunnel) addr=127.0.0.1 ip_=15201 ep=17007 label="tunnel (QUIC, plugin)" ;;
        ssh) addr=127.0.0.1 ip_=25201 ep=27007 label="ssh -L over port forward" ;;
        plain) addr=$B_PUB ip_=5201 ep=7007 label="plain TCP, port forward" ;;
    esac
    if [[ $path == tunnel ]]; then a0=$(cpu_ticks $ALICE); b0=$(cpu_ticks $BOB); fi
    if [[ $path == ssh ]]; then s0=$(cpu_ticks $SSH); fi
    read -r up up_bytes < <(iperf "$addr" "$ip_")
    read -r down down_bytes < <(iperf "$addr" "$ip_" -R)
    if [[ $path == tunnel ]]; then
        a1=$(cpu_ticks $ALICE); b1=$(cpu_ticks $BOB)
        gb=$(awk -v u="$up_bytes" -v d="$down_bytes" 'BEGIN { print (u + d) / 1e9 }')
    fi
    if [[ $path == ssh ]]; then
        s1=$(cpu_ticks $SSH)
        ssh_gb=$(awk -v u="$up_bytes" -v d="$down_bytes" 'BEGIN { print (u + d) / 1e9 }')
    fi
    read -r p50 p99 < <(rtt "$addr" "$ep" || echo "- -")
    P50[$path]=$p50
    printf '    %-26s %12s %12s %10s %10s\n' "$label" "$up" "$down" "$p50" "$p99"
done
awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v hz="$HZ" -v gb="$gb" 'BEGIN {
    printf "    plugin CPU per GB carried (both directions, %.2f GB): inviter %.2f s/GB, acceptor %.2f s/GB\n",
        gb, a / hz / gb, b / hz / gb }'
awk -v s=$((s1 - s0)) -v hz="$HZ" -v gb="$ssh_gb" 'BEGIN {
    printf "    for comparison, the ssh client of ssh -L: %.2f s/GB (%.2f GB)\n", s / hz / gb, gb }'
echo "    peak RSS (VmHWM) of the plexus processes: inviter $(hwm_mb $ALICE) MB, acceptor $(hwm_mb $BOB) MB"
[[ ${P50[tunnel]} =~ ^[0-9]+$ && ${P50[plain]} =~ ^[0-9]+$ ]] &&
    echo "    latency the tunnel adds over plain TCP (median): $((P50[tunnel] - P50[plain])) us"

touch "$WORK/stop"
for _ in $(seq 1 100); do kill -0 $ALICE 2>/dev/null || kill -0 $BOB 2>/dev/null || break; sleep 0.1; done
grep -h "plexus::plugin::tunnel: tunnel (inviter) ended" "$WORK/alice.log" | tail -n 1 | sed -e "s/^[0-9.]* [A-Z]* [^ ]* /    inviter: /" -e "s/ (plexus_tunnel::run)$//"
