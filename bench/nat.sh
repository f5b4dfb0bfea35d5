#!/usr/bin/env bash
# Times a full `plexus nat` profile against coturn's `turnutils_natdiscovery -m -f`
# for each lab NAT type, in the same lab run. Needs root (network namespaces).
#   bench/nat.sh [path/to/plexus]     (default: target/release/plexus, built if missing)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
lab="$here/tests/lab/lab.sh"
bin=${1:-$here/target/release/plexus}
[ -x "$bin" ] || (cd "$here" && cargo build --release -p plexus-cli >&2)
name=plxbench$$
stun=203.0.113.3
trap '"$lab" down "$name" >/dev/null 2>&1 || true' EXIT
"$lab" up --no-mail --name "$name" --owner $$ >/dev/null 2>&1

ms() { date +%s%N; }
printf '%-12s %-24s %10s %16s %20s\n' site "plexus mapping/filtering" "plexus ms" "natdiscovery ms" "plexus/natdiscovery"
for site in b-none b-full b-address b-port a-symmetric; do
    t0=$(ms)
    # The STUN profile only (what natdiscovery does): the router probe waits out its
    # 1 s bound where no router answers UPnP.
    out=$("$lab" exec "$name" "$site-h" "$bin" nat --json --no-port-mapping --stun "$stun")
    t1=$(ms)
    "$lab" exec "$name" "$site-h" timeout 120 turnutils_natdiscovery -m -f -H "$stun" >/dev/null 2>&1 || true
    t2=$(ms)
    p=$(( (t1 - t0) / 1000000 )); n=$(( (t2 - t1) / 1000000 ))
    verdict=$(printf '%s' "$out" | python3 -c 'import json,sys; v=json.load(sys.stdin)[0]; print("%s/%s" % ((v["mapping"] or "?")[:11], (v["filtering"] or "?")[:11]))')
    ratio=$(awk -v p="$p" -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? p / n : 0) }')
    printf '%-12s %-24s %10d %16d %20s\n' "$site" "$verdict" "$p" "$n" "$ratio"
done
