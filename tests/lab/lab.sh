#!/usr/bin/env bash
# The plexus NAT lab: a routed "internet" of network namespaces with real NATs
# (nftables), a real STUN server (coturn, RFC 5780), TURN relays (coturn) and a real mail host.
#
#   lab.sh up [--name NAME] [--extra-routers N] [--no-mail] [--owner PID]
#   lab.sh down NAME          tear a lab down completely (daemons, netns, state)
#   lab.sh gc                 tear down every lab whose owner process is gone
#   lab.sh status NAME        exit 0 when every netns and daemon is there
#   lab.sh exec NAME NODE CMD...   run CMD in NODE (netns name or its suffix: a-port-h)
#   lab.sh loss NAME SITE PCT [udp]  drop PCT % of the site's public-link packets, both
#                                  directions, all protocols (or UDP only); 0 = off
#   lab.sh watch NAME         (internal) wait for the owner to die, then `down`
#
# Every namespace is called NAME-<node>; NAME is `plx` + lowercase letters/digits,
# so labs never collide with each other or with anything else on the machine.
# State lives in /run/plexus-lab/NAME/ (lab.json describes everything).
# The namespaces have no link to the root namespace: nothing can leak out.
# See README.md, "The lab", for the topology drawing and addresses.
#
# Dual stack: IPv6 is on in every namespace (no DAD, no router advertisements). The
# public side (inet, STUN, mail) has IPv6 under 2001:db8::/32; a site has a global IPv6
# prefix only when its table row says so (6th column), the others are IPv4-only sites
# (link-local IPv6 only, no IPv6 route).
set -euo pipefail

LAB_ROOT=/run/plexus-lab
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAIL_SH="$HERE/mail.sh"

die() { echo "lab.sh: $*" >&2; exit 1; }
warn() { echo "lab.sh: warning: $*" >&2; }

valid_name() { [[ $1 =~ ^plx[a-z0-9]{1,12}$ ]]; }

# Sites, one row each: name nat4 extra-routers hosts v6 [portmap]
#   nat4           IPv4 behaviour: none|full|address|port|symmetric|hairpin, or
#                  no-ipv4 (no IPv4 at all on the host and its router, no v4 uplink)
#   extra-routers  N (the --extra-routers default) or a fixed number
#   hosts          hosts behind the router (more than one: a bridge)
#   v6             - (IPv4-only site), firewall (global /64 behind a stateful firewall)
#                  or nat66 (ULA LAN masqueraded to the router's WAN address); sites
#                  with IPv6 have no extra routers (fixed 0)
#   portmap        optional: a port mapping daemon on the router (miniupnpd)
# Two of each of none/full/address/port/symmetric so every ordered pair (also same
# type) exists (new sites go last: a site's index numbers its LAN, 10.idx.0.0/24 and
# 2001:db8:1:idx::/64 with the decimal digits as the hex group); c-port/d-port always sit
# behind 2 extra routers so TTL-limited punching can be tested on a longer path in the
# same lab. Two sites have two hosts behind one NAT: `hairpin` loops LAN traffic to the
# public address back in, `lan2` (plain masquerade) does not, so peers there must use
# each other's local endpoints.
site_table() {
    cat <<EOF
a-none none N 1 -
b-none none N 1 -
a-full full N 1 -
b-full full N 1 -
a-address address N 1 -
b-address address N 1 -
a-port port N 1 -
b-port port N 1 -
a-symmetric symmetric N 1 -
hairpin hairpin N 2 -
c-port port 2 1 -
d-port port 2 1 -
lan2 port N 2 -
b-symmetric symmetric N 1 -
upnp-symmetric symmetric N 1 - miniupnpd
v6-fw-a port 0 1 firewall
v6-fw-b port 0 1 firewall
v6-symmetric symmetric 0 1 firewall
v6-only no-ipv4 0 1 firewall
v6-nat66 port 0 1 nat66
EOF
}

# Owner identity is "pid starttime" so a recycled PID does not keep a lab alive.
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
owner_alive() {
    local f=$1/owner pid start
    [[ -f $f ]] || return 1
    read -r pid start <"$f" || return 1
    [[ -n ${pid:-} ]] || return 1
    [[ $pid == 0 ]] && return 0          # --owner 0: kept until `down`
    [[ -d /proc/$pid ]] || return 1
    [[ "$(proc_start "$pid")" == "$start" ]]
}

lab_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-" || true; }

cmd_down() {
    local name=$1 st=$LAB_ROOT/$1 ns pid pids=() self=$$
    valid_name "$name" || die "bad lab name '$name' (expected plx + up to 12 of [a-z0-9])"
    if [[ -x $MAIL_SH && -d $st/mail ]]; then
        "$MAIL_SH" stop "$st/mail" >/dev/null 2>&1 || warn "mail.sh stop failed (daemons killed below)"
    fi
    # Every process living in one of this lab's namespaces is ours: daemons the lab
    # started and anything tests spawned there.
    for ns in $(lab_netns "$name"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            [[ $pid == "$self" ]] || pids+=("$pid")
        done
    done
    if [[ -f $st/watchdog ]]; then
        pid=$(cat "$st/watchdog")
        [[ -n $pid && $pid != "$self" ]] && kill -TERM "$pid" 2>/dev/null || true
    fi
    if [[ -f $st/pids ]]; then
        while read -r pid; do [[ -n $pid && -d /proc/$pid ]] && pids+=("$pid"); done <"$st/pids"
    fi
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 1 20); do
            local alive=0
            for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
            ((alive)) || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for ns in $(lab_netns "$name"); do ip netns del "$ns" 2>/dev/null || warn "could not delete netns $ns"; done
    rm -rf "$st"
}

cmd_gc() {
    local st name ns
    [[ -d $LAB_ROOT ]] && for st in "$LAB_ROOT"/plx*; do
        [[ -d $st ]] || continue
        name=$(basename "$st")
        valid_name "$name" || continue
        # A lab being built has its owner file written first; give it a grace period.
        if [[ ! -f $st/owner ]] && (($(date +%s) - $(stat -c %Y "$st") < 60)); then continue; fi
        owner_alive "$st" || { echo "lab.sh: gc: removing lab $name (owner gone)" >&2; cmd_down "$name"; }
    done
    # Namespaces of a lab whose state dir is gone (crash while deleting it).
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^plx[a-z0-9]{1,12}-' || true); do
        name=${ns%%-*}
        [[ -d $LAB_ROOT/$name ]] || { echo "lab.sh: gc: removing orphan netns $ns" >&2; cmd_down "$name"; }
    done
}

cmd_watch() {
    local name=$1 st=$LAB_ROOT/$1
    while [[ -d $st ]] && owner_alive "$st"; do sleep 0.5; done
    [[ -d $st ]] && cmd_down "$name"
}

cmd_status() {
    local name=$1 st=$LAB_ROOT/$1 ns pid ok=0
    [[ -f $st/lab.json ]] || { echo "lab $name: not up"; return 1; }
    while read -r ns; do
        [[ -e /run/netns/$ns ]] || { echo "missing netns $ns"; ok=1; }
    done <"$st/netns"
    while read -r pid; do
        [[ -n $pid ]] || continue
        [[ -d /proc/$pid ]] || { echo "daemon pid $pid is dead"; ok=1; }
    done <"$st/pids"
    if ((ok == 0)); then echo "lab $name: up ($(wc -l <"$st/netns") namespaces), $st/lab.json"; fi
    if owner_alive "$st"; then :; else echo "owner process is gone (gc will remove it)"; fi
    return $ok
}

resolve_node() {
    local name=$1 node=$2
    if [[ -e /run/netns/$node ]]; then echo "$node"
    elif [[ -e /run/netns/$name-$node ]]; then echo "$name-$node"
    else die "no node '$node' in lab $name"; fi
}

cmd_exec() {
    local name=$1 node=$2; shift 2
    local ns; ns=$(resolve_node "$name" "$node")
    exec ip netns exec "$ns" "$@"
}

chain_of() { echo "loss_${1//-/_}"; }

cmd_loss() {
    local name=$1 site=$2 pct=$3 what=${4:-all} chain match=()
    [[ $pct =~ ^[0-9]+$ ]] && ((pct <= 100)) || die "loss: PCT must be 0..100, got '$pct'"
    case $what in
        all) ;;
        udp) match=(meta l4proto udp) ;;
        *) die "loss: the optional 4th argument must be 'udp' (drop UDP only), got '$what'" ;;
    esac
    grep -qx "$site" "$LAB_ROOT/$name/sites" 2>/dev/null || die "loss: no site '$site' in lab $name"
    chain=$(chain_of "$site")
    ip netns exec "$name-inet" nft flush chain inet lab "$chain"
    if ((pct == 100)); then
        ip netns exec "$name-inet" nft add rule inet lab "$chain" "${match[@]}" drop
    elif ((pct > 0)); then
        ip netns exec "$name-inet" nft add rule inet lab "$chain" "${match[@]}" numgen random mod 100 '<' "$pct" drop
    fi
}

# ---------------------------------------------------------------------------
# up

cmd_up() {
    local name="" extra=0 mail=1 owner=$PPID
    while (($#)); do
        case $1 in
            --name) name=$2; shift 2 ;;
            --extra-routers) extra=$2; shift 2 ;;
            --no-mail) mail=0; shift ;;
            --owner) owner=$2; shift 2 ;;
            *) die "up: unknown option '$1' (see the header of lab.sh)" ;;
        esac
    done
    [[ -n $name ]] || name=plx$(tr -dc 'a-z0-9' </dev/urandom | head -c 5)
    valid_name "$name" || die "bad lab name '$name' (expected plx + up to 12 of [a-z0-9])"
    [[ $extra =~ ^[0-4]$ ]] || die "--extra-routers must be 0..4 (the 198.51.100.0/24 links run out), got '$extra'"
    [[ $owner =~ ^[0-9]+$ ]] || die "--owner must be a PID"
    [[ $(id -u) == 0 ]] || die "must run as root (network namespaces)"

    local st=$LAB_ROOT/$name
    if [[ -f $st/lab.json ]] && cmd_status "$name" >/dev/null 2>&1; then
        echo "$st/lab.json"; return 0
    fi
    [[ -d $st ]] && cmd_down "$name"
    # Pre-flight with a throwaway name so a machine without netns fails cleanly.
    ip netns add "$name-probe" 2>/dev/null || die "cannot create network namespaces (ip netns add failed)"
    ip netns del "$name-probe"

    mkdir -p "$st"
    if [[ $owner == 0 ]]; then echo "0 0" >"$st/owner"; else echo "$owner $(proc_start "$owner")" >"$st/owner"; fi
    : >"$st/pids"; : >"$st/netns"; : >"$st/sites"
    # Any failure below (die, a failed command) tears the half-built lab down.
    trap 'if [[ -z ${LAB_BUILT:-} ]]; then echo "lab.sh: up failed, tearing down $name" >&2; cmd_down "$name"; fi' EXIT
    build "$name" "$st" "$extra" "$mail"
    LAB_BUILT=1
    # A watchdog outside the lab removes it when the owner dies, even by SIGKILL
    # (the owner's own teardown, if it runs, kills the watchdog first).
    if [[ $owner != 0 ]]; then
        setsid "$HERE/lab.sh" watch "$name" </dev/null >/dev/null 2>&1 &
        echo $! >"$st/watchdog"
    fi
    echo "$st/lab.json"
}

build() {
    local name=$1 st=$2 extra=$3 mail=$4
    local t0; t0=$(date +%s%N)
    local inet=$name-inet stun=$name-stun mailns=$name-mail dhtns=$name-dht
    local veths=$st/veths.batch; : >"$veths"
    declare -A batch=()      # netns -> ip batch lines (addresses, routes)
    declare -A kind=()       # netns -> router|host|server
    local ns_list=("$inet" "$stun")
    ((mail)) && ns_list+=("$mailns")
    kind[$inet]=router; kind[$stun]=server; kind[$mailns]=server
    # DHT testnet host (the `dht` plugin): 203.0.113.128/26, router .129, nodes .130-.190,
    # one address per node as on the real DHT. Tests start their own nodes there.
    ns_list+=("$dhtns"); kind[$dhtns]=server
    echo "link add dht netns $inet type veth peer name eth0 netns $dhtns" >>"$veths"
    batch[$inet]+="addr add 203.0.113.129/26 dev dht"$'\n'"link set dht up"$'\n'
    local dhti
    for ((dhti = 130; dhti <= 190; dhti++)); do batch[$dhtns]+="addr add 203.0.113.$dhti/26 dev eth0"$'\n'; done
    batch[$dhtns]+="link set eth0 up"$'\n'"route add default via 203.0.113.129 dev eth0 onlink"$'\n'

    # Servers: 203.0.113.0/29 for STUN (two addresses for RFC 5780), .24/29 for mail.
    echo "link add stun netns $inet type veth peer name eth0 netns $stun" >>"$veths"
    batch[$inet]+="addr add 203.0.113.1/29 dev stun"$'\n'"link set stun up"$'\n'
    batch[$stun]+="addr add 203.0.113.3/29 dev eth0"$'\n'"addr add 203.0.113.4/29 dev eth0"$'\n'
    # TURN (issue 12): its own address, so the RFC 5780 STUN above stays as it is.
    batch[$stun]+="addr add 203.0.113.5/29 dev eth0"$'\n'
    batch[$stun]+="link set eth0 up"$'\n'"route add default via 203.0.113.1 dev eth0 onlink"$'\n'
    # IPv6 (documentation prefix): STUN 2001:db8:0:5::3 and ::4 (RFC 5780 over IPv6),
    # mail 2001:db8:0:25::25, each on a /64 with the public router at ::1. `nodad`: an
    # address is usable at once instead of tentative for a second.
    batch[$inet]+="addr add 2001:db8:0:5::1/64 dev stun nodad"$'\n'
    batch[$stun]+="addr add 2001:db8:0:5::3/64 dev eth0 nodad"$'\n'"addr add 2001:db8:0:5::4/64 dev eth0 nodad"$'\n'
    batch[$stun]+="route add ::/0 via 2001:db8:0:5::1 dev eth0"$'\n'
    if ((mail)); then
        echo "link add mail netns $inet type veth peer name eth0 netns $mailns" >>"$veths"
        batch[$inet]+="addr add 203.0.113.30/29 dev mail"$'\n'"link set mail up"$'\n'
        batch[$mailns]+="addr add 203.0.113.25/29 dev eth0"$'\n'"link set eth0 up"$'\n'
        batch[$mailns]+="route add default via 203.0.113.30 dev eth0 onlink"$'\n'
        batch[$inet]+="addr add 2001:db8:0:25::1/64 dev mail nodad"$'\n'
        batch[$mailns]+="addr add 2001:db8:0:25::25/64 dev eth0 nodad"$'\n'
        batch[$mailns]+="route add ::/0 via 2001:db8:0:25::1 dev eth0"$'\n'
    fi

    local inet_nft="table inet lab {"$'\n'
    local inet_fwd="  chain forward { type filter hook forward priority filter; policy accept;"$'\n'
    local sites_json="" link=0 none_idx=0 idx=0
    local site nat k nhosts v6 portmap upnp_sites=()
    while read -r site nat k nhosts v6 portmap; do
        idx=$((idx + 1))
        [[ $k == N ]] && k=$extra
        [[ $v6 == - || $v6 == firewall || $v6 == nat66 ]] || die "site $site: bad v6 mode '$v6'"
        local v4=1; [[ $nat == no-ipv4 ]] && v4=0
        [[ $v6 != - ]] && ((k != 0)) && die "site $site: a site with IPv6 has no extra routers"
        ((v4)) || [[ $v6 != - ]] || die "site $site: neither IPv4 nor IPv6"
        echo "$site" >>"$st/sites"
        local r=$name-$site-r chain; chain=$(chain_of "$site")
        ns_list+=("$r"); kind[$r]=router
        # Public chain: inet -(link j0)- x1 -(j0+1)- ... xk -(j0+k)- NAT router.
        # Link j is 198.51.100.4j/30: upstream .4j+1, downstream .4j+2. A site without
        # IPv4 takes no link number.
        local j0=$link i up_ns down_ns routers_json=""
        ((v4)) && link=$((link + k + 1))
        ((link <= 64)) || die "out of 198.51.100.0/24 /30 links (too many extra routers)"
        for ((i = 0; i <= k; i++)); do
            local j=$((j0 + i)) a b
            a=198.51.100.$((4 * j + 1)); b=198.51.100.$((4 * j + 2))
            if ((i == 0)); then up_ns=$inet; else up_ns=$name-$site-x$i; fi
            if ((i == k)); then down_ns=$r; else
                down_ns=$name-$site-x$((i + 1)); ns_list+=("$down_ns"); kind[$down_ns]=router
                routers_json+="\"$down_ns\","
            fi
            local up_if=sub; ((i == 0)) && up_if=s$idx
            echo "link add $up_if netns $up_ns type veth peer name wan netns $down_ns" >>"$veths"
            batch[$up_ns]+="link set $up_if up"$'\n'
            batch[$down_ns]+="link set wan up"$'\n'
            if ((v4)); then
                batch[$up_ns]+="addr add $a/30 dev $up_if"$'\n'
                batch[$down_ns]+="addr add $b/30 dev wan"$'\n'
                batch[$down_ns]+="route add default via $a dev wan onlink"$'\n'
            fi
        done
        local public=198.51.100.$((4 * (j0 + k) + 2))
        # LAN: 192.0.2.8m/29 (public, no NAT) or 10.idx.0.0/24 behind the NAT.
        local lan_prefix router_lan host_ips=() lan_net
        if [[ $nat == none ]]; then
            lan_net=192.0.2.$((8 * none_idx))/29
            router_lan=192.0.2.$((8 * none_idx + 1)); lan_prefix=29
            host_ips=("192.0.2.$((8 * none_idx + 2))")
            none_idx=$((none_idx + 1))
        else
            lan_net=10.$idx.0.0/24; router_lan=10.$idx.0.1; lan_prefix=24
            for ((i = 0; i < nhosts; i++)); do host_ips+=("10.$idx.0.$((i + 2))"); done
        fi
        # Every router upstream of the site routes its downstream links and LAN.
        for ((i = 0; i <= k && v4; i++)); do
            local via=198.51.100.$((4 * (j0 + i) + 2)) rns
            if ((i == 0)); then rns=$inet; else rns=$name-$site-x$i; fi
            local dev=sub; ((i == 0)) && dev=s$idx
            for ((m = j0 + i + 1; m <= j0 + k; m++)); do
                batch[$rns]+="route add 198.51.100.$((4 * m))/30 via $via dev $dev onlink"$'\n'
            done
            [[ $nat == none ]] && batch[$rns]+="route add $lan_net via $via dev $dev onlink"$'\n'
        done
        # IPv6 (only sites without extra routers): uplink 2001:db8:ff:IDX::/64 (inet ::1,
        # router WAN ::2); LAN 2001:db8:1:IDX::/64 routed by inet via the WAN (firewall),
        # or the ULA fd00:0:0:IDX::/64 masqueraded by the router (nat66). Router ::1,
        # hosts ::2, ::3...
        local lan6="" rlan6="" wan6="" pub6="" host6s=()
        if [[ $v6 != - ]]; then
            wan6=2001:db8:ff:$idx::2
            if [[ $v6 == nat66 ]]; then lan6=fd00:0:0:$idx::; else lan6=2001:db8:1:$idx::; fi
            rlan6=${lan6}1
            for ((i = 0; i < nhosts; i++)); do host6s+=("$lan6$((i + 2))"); done
            batch[$inet]+="addr add 2001:db8:ff:$idx::1/64 dev s$idx nodad"$'\n'
            batch[$r]+="addr add $wan6/64 dev wan nodad"$'\n'"route add ::/0 via 2001:db8:ff:$idx::1 dev wan"$'\n'
            if [[ $v6 == firewall ]]; then
                batch[$inet]+="route add $lan6/64 via $wan6 dev s$idx"$'\n'
                pub6=${host6s[0]}
            else
                pub6=$wan6
            fi
        fi
        # LAN side: one veth for a single host, a bridge for the hairpin site.
        local hosts_json="" h lan_if=lan first_host=""
        if ((nhosts > 1)); then
            batch[$r]+="link add br0 type bridge"$'\n'"link set br0 up"$'\n'
            lan_if=br0
        fi
        ((v4)) && batch[$r]+="addr add $router_lan/$lan_prefix dev $lan_if"$'\n'
        [[ -n $lan6 ]] && batch[$r]+="addr add $rlan6/64 dev $lan_if nodad"$'\n'
        for ((i = 0; i < nhosts; i++)); do
            if ((nhosts > 1)); then h=$name-$site-h$((i + 1)); else h=$name-$site-h; fi
            ns_list+=("$h"); kind[$h]=host
            local rif=lan; ((nhosts > 1)) && rif=lan$((i + 1))
            echo "link add $rif netns $r type veth peer name eth0 netns $h" >>"$veths"
            ((nhosts > 1)) && batch[$r]+="link set $rif master br0"$'\n'
            batch[$r]+="link set $rif up"$'\n'
            batch[$h]+="link set eth0 up"$'\n'
            local hip=null hip6=null
            if ((v4)); then
                batch[$h]+="addr add ${host_ips[i]}/$lan_prefix dev eth0"$'\n'
                batch[$h]+="route add default via $router_lan dev eth0 onlink"$'\n'
                hip="\"${host_ips[i]}\""
            fi
            if [[ -n $lan6 ]]; then
                batch[$h]+="addr add ${host6s[i]}/64 dev eth0 nodad"$'\n'"route add ::/0 via $rlan6 dev eth0"$'\n'
                hip6="\"${host6s[i]}\""
            fi
            hosts_json+="{\"netns\":\"$h\",\"ip\":$hip,\"ip6\":$hip6},"
            ((i == 0)) && first_host=$h
        done
        nat_rules "$nat" "$public" "${host_ips[0]}" "10.$idx.0.0/24" "$lan_if" >"$st/$site.nft"
        [[ $v6 != - ]] && v6_rules "$v6" "$lan_if" >>"$st/$site.nft"
        local portmap_json=""
        if [[ ${portmap:-} == miniupnpd ]]; then
            ((v4)) || die "site $site: miniupnpd needs IPv4"
            miniupnpd_rules "$public" >>"$st/$site.nft"
            upnp_sites+=("$site $r $public $lan_net")
            portmap_json="\"portmap\":\"miniupnpd\","
        fi
        inet_nft+="  chain $chain { }"$'\n'
        inet_fwd+="    iifname \"s$idx\" jump $chain"$'\n'"    oifname \"s$idx\" jump $chain"$'\n'
        local pub_json=$public; [[ $nat == none ]] && pub_json=${host_ips[0]}
        local v4_json v6_json=null
        if ((v4)); then
            v4_json="\"host_ip\":\"${host_ips[0]}\",\"public_ip\":\"$pub_json\",\"router_wan_ip\":\"$public\","
            v4_json+="\"lan\":\"$lan_net\",\"gateway\":\"$router_lan\","
        else
            v4_json="\"host_ip\":null,\"public_ip\":null,\"router_wan_ip\":null,\"lan\":null,\"gateway\":null,"
        fi
        if [[ $v6 != - ]]; then
            v6_json="{\"mode\":\"$v6\",\"host_ip\":\"${host6s[0]}\",\"public_ip\":\"$pub6\","
            v6_json+="\"router_lan_ip\":\"$rlan6\",\"router_wan_ip\":\"$wan6\",\"lan\":\"$lan6/64\"}"
        fi
        sites_json+="\"$site\":{\"nat\":\"$nat\",\"hosts\":[${hosts_json%,}],"
        sites_json+="\"host_netns\":\"$first_host\",\"router_netns\":\"$r\",$v4_json"
        sites_json+="\"ipv4\":$( ((v4)) && echo true || echo false),\"ipv6\":$v6_json,"
        sites_json+="$portmap_json\"uplink_iface\":\"s$idx\",\"extra_routers\":[${routers_json%,}]},"
    done < <(site_table)
    inet_nft+="$inet_fwd  }"$'\n'"}"$'\n'
    printf '%s' "$inet_nft" >"$st/inet.nft"

    # 1. namespaces (one ip batch), 2. veths straight into their namespaces.
    printf '%s\n' "${ns_list[@]}" >"$st/netns"
    sed 's/^/netns add /' "$st/netns" | ip -batch -
    ip -batch "$veths"
    # 3. per namespace: sysctls, addresses, routes, nftables.
    local ns setup_pids=()
    for ns in "${ns_list[@]}"; do
        local sc="net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.icmp_ratelimit=0"
        # IPv6 on, without duplicate address detection (addresses usable at once) and
        # without router advertisements (every address and route is static).
        sc+=" net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0"
        sc+=" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
        sc+=" net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 net.ipv6.icmp.ratelimit=0"
        [[ ${kind[$ns]} == router ]] && sc+=" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
        local nftf=""
        case $ns in
            "$inet") nftf=$st/inet.nft ;;
            "$name"-*-r) nftf=$st/${ns#"$name"-}; nftf=${nftf%-r}.nft ;;
        esac
        {
            printf 'link set lo up\n'
            printf '%s' "${batch[$ns]:-}"
        } >"$st/$ns.ip"
        # rp_filter is checked per interface too; set it for the ones just made.
        ip netns exec "$ns" sh -ec "
            sysctl -q -w $sc >/dev/null
            for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 >\$f; done
            # DAD is skipped only when both 'all' and the interface say so; the veths
            # are still down here, so their link-local addresses come up usable.
            for f in /proc/sys/net/ipv6/conf/*/accept_dad /proc/sys/net/ipv6/conf/*/accept_ra; do echo 0 >\$f; done
            [ -d /proc/sys/net/bridge ] && for f in /proc/sys/net/bridge/bridge-nf-call-*; do echo 0 >\$f; done
            ip -batch '$st/$ns.ip'
            [ -z '$nftf' ] || nft -f '$nftf'
        " &
        setup_pids+=($!)
    done
    local p failed=0
    for p in "${setup_pids[@]}"; do wait "$p" || failed=1; done
    ((failed == 0)) || die "namespace setup failed (see the errors above)"

    # 4. STUN: coturn with the lab's own config (RFC 5780 on, no Debian defaults).
    cat >"$st/coturn.conf" <<EOF
listening-ip=203.0.113.3
listening-ip=203.0.113.4
listening-ip=2001:db8:0:5::3
listening-ip=2001:db8:0:5::4
listening-port=3478
alt-listening-port=3479
stun-only
no-cli
no-tls
no-dtls
no-auth
simple-log
log-file=$st/coturn.log
pidfile=$st/coturn.pid
userdb=$st/coturn.db
EOF
    setsid ip netns exec "$stun" turnserver -c "$st/coturn.conf" </dev/null >"$st/coturn.out" 2>&1 &
    echo $! >>"$st/pids"

    # 4b. TURN relay (RFC 8656) on 203.0.113.5: one coturn with long-term credentials
    # (port 3478) and one with TURN REST credentials (port 3480); one instance cannot
    # do both. Short lifetimes so a one-minute test sees refreshes and a stale nonce.
    local turn_pw turn_secret
    turn_pw=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    turn_secret=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    local mode port minp maxp
    for mode in lt rest; do
        if [[ $mode == lt ]]; then port=3478 minp=49152 maxp=49499; else port=3480 minp=49500 maxp=49999; fi
        {
            echo "listening-ip=203.0.113.5"
            echo "relay-ip=203.0.113.5"
            echo "listening-port=$port"
            echo "min-port=$minp"
            echo "max-port=$maxp"
            echo "realm=lab.plexus.test"
            if [[ $mode == lt ]]; then
                echo "lt-cred-mech"
                echo "user=plexus:$turn_pw"
            else
                echo "use-auth-secret"
                echo "static-auth-secret=$turn_secret"
            fi
            echo "max-allocate-lifetime=40"
            echo "permission-lifetime=40"
            echo "channel-lifetime=40"
            echo "stale-nonce=30"
            echo "no-multicast-peers"
            # The lab's public addresses are documentation ranges; say so explicitly.
            echo "allowed-peer-ip=198.51.100.0-198.51.100.255"
            echo "allowed-peer-ip=203.0.113.0-203.0.113.255"
            echo "allowed-peer-ip=192.0.2.0-192.0.2.255"
            echo "no-cli"
            echo "no-tls"
            echo "no-dtls"
            echo "simple-log"
            echo "log-file=$st/coturn-$mode.log"
            echo "pidfile=$st/coturn-$mode.pid"
            echo "userdb=$st/coturn-$mode.db"
        } >"$st/coturn-$mode.conf"
        chmod 600 "$st/coturn-$mode.conf"
        setsid ip netns exec "$stun" turnserver -c "$st/coturn-$mode.conf" </dev/null >"$st/coturn-$mode.out" 2>&1 &
        echo $! >>"$st/pids"
    done

    # 5. Mail, written by mail.sh; merged into lab.json under "mail".
    local mail_json=null
    if ((mail)); then
        if [[ -x $MAIL_SH ]]; then
            mkdir -p "$st/mail"
            "$MAIL_SH" start "$mailns" 203.0.113.25 "$st/mail" 2001:db8:0:25::25 >"$st/mail.out" 2>&1 \
                || { cat "$st/mail.out" >&2; die "mail.sh start failed (see above)"; }
            [[ -f $st/mail/mail.json ]] || die "mail.sh did not write $st/mail/mail.json"
            mail_json=$(cat "$st/mail/mail.json")
        else
            warn "tests/lab/mail.sh is missing: lab without mail"
        fi
    fi

    # coturn must answer before the lab is called up (bounded: 5 s).
    wait_stun "$name"
    wait_stun "$name" 2001:db8:0:5::3 3478
    wait_stun "$name" 203.0.113.5 3478
    wait_stun "$name" 203.0.113.5 3480

    # 6. Port mapping daemons on the routers that have one (UPnP-IGD, NAT-PMP, PCP).
    # miniupnpd refuses ext_ip= in a documentation range (198.51.100.0/24), so it
    # learns the site's public address by STUN from the lab's coturn instead.
    local u
    for u in "${upnp_sites[@]}"; do
        # shellcheck disable=SC2086
        start_miniupnpd "$st" $u
    done
    for u in "${upnp_sites[@]}"; do wait_miniupnpd "$st" "${u%% *}"; done

    local ms=$((($(date +%s%N) - t0) / 1000000))
    local owner_pid; owner_pid=$(awk '{print $1}' "$st/owner")
    cat >"$st/lab.json.tmp" <<EOF
{"name":"$name","state_dir":"$st","owner_pid":$owner_pid,"extra_routers":$extra,"start_ms":$ms,
"netns":[$(sed 's/.*/"&"/' "$st/netns" | paste -sd,)],
"inet":{"netns":"$inet"},
"stun":{"netns":"$stun","ips":["203.0.113.3","203.0.113.4"],"port":3478,"alt_port":3479},
"stun6":{"netns":"$stun","ips":["2001:db8:0:5::3","2001:db8:0:5::4"],"port":3478,"alt_port":3479},
"dht":{"netns":"$dhtns","first_ip":"203.0.113.130","last_ip":"203.0.113.190"},
"turn":{"netns":"$stun","ip":"203.0.113.5","port":3478,"rest_port":3480,"realm":"lab.plexus.test",
 "user":"plexus","password":"$turn_pw","rest_secret":"$turn_secret","max_lifetime_s":40},
"sites":{${sites_json%,}},
"mail":$mail_json}
EOF
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$st/lab.json.tmp" \
        || die "internal error: lab.json is not valid JSON"
    mv "$st/lab.json.tmp" "$st/lab.json"
    echo "lab.sh: lab $name up in ${ms} ms" >&2
}

# A STUN binding request (default 203.0.113.3:3478; IPv4 or IPv6) from the inet router
# (bounded).
wait_stun() {
    local name=$1 ip=${2:-203.0.113.3} port=${3:-3478}
    ip netns exec "$name-inet" python3 - "$ip" "$port" <<'EOF' || die "coturn did not answer STUN on [$ip]:$port within 5 s (see coturn*.log)"
import os, socket, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
req = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
end = time.time() + 5
while time.time() < end:
    try:
        s.sendto(req, (sys.argv[1], int(sys.argv[2])))
        d, _ = s.recvfrom(2048)
        if d[8:20] == req[8:20]:
            sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# IPv6 nftables for a site router (appended to its IPv4 rules). Args: mode lan-iface.
# A home router's default: the LAN may open flows, the outside only answers them
# (ICMPv6 errors about an open flow are "related"). nat66 also masquerades the ULA LAN
# to the WAN address, without `random`, like a default Linux masquerade.
v6_rules() {
    local mode=$1 lanif=$2
    cat <<EOF
table ip6 fw {
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "$lanif" accept
  }
}
EOF
    [[ $mode == nat66 ]] && cat <<EOF
table ip6 nat66 {
  chain post { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" ip6 saddr fd00::/8 masquerade
  }
}
EOF
    return 0
}

# nftables for one NAT router. Args: type public-ip host-ip lan lan-iface.
nat_rules() {
    local nat=$1 pub=$2 host=$3 lan=$4 lanif=$5
    case $nat in
    none) echo "# no NAT: the router only routes" ;;
    no-ipv4) echo "# no IPv4 on this site" ;;
    full)
        # EIM + EIF: 1:1 source NAT keeps the port (one host, so it is always
        # free); everything arriving at the public address goes to the host.
        cat <<EOF
table ip nat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" ip daddr $pub dnat to $host
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" snat to $pub
  }
}
EOF
        ;;
    address)
        # EIM + ADF: as full, but a new inbound flow is let in only when that
        # mapping (internal port = public port here) has sent to that remote
        # address. Keyed per mapping, not per host: otherwise one probe opens
        # the host to a server for every later port and it looks like full cone.
        cat <<EOF
table ip nat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" ip daddr $pub dnat to $host
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" snat to $pub
  }
}
table ip filter {
  set adf { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 3m;
  }
  chain forward { type filter hook forward priority filter; policy accept;
    iifname "$lanif" oifname "wan" meta l4proto udp update @adf { ip daddr . udp sport }
    iifname "wan" ct state established,related accept
    iifname "wan" meta l4proto udp ip saddr . udp dport @adf accept
    iifname "wan" drop
  }
}
EOF
        ;;
    port)
        # EIM + APDF: Linux masquerade (port kept when free, conntrack filters).
        # No input drop policy: an unsolicited packet must create its conntrack
        # entry like on a real router (that is what the TTL test shows).
        cat <<EOF
table ip nat {
  chain post { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
}
EOF
        ;;
    symmetric)
        # APDM: a random public port for every new (remote address, port).
        cat <<EOF
table ip nat {
  chain post { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade fully-random
  }
}
EOF
        ;;
    hairpin)
        # Port-restricted masquerade for several hosts, plus hairpinning: each
        # UDP mapping (public port -> internal address.port) is recorded after
        # source NAT; a LAN packet to the public address is sent back in to the
        # mapping's owner, with its source translated to the public address
        # (RFC 4787 REQ-9), so the receiver sees the sender's public endpoint.
        cat <<EOF
table ip nat {
  map hp { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 3m;
  }
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    iifname "$lanif" ip daddr $pub meta l4proto udp dnat ip to udp dport map @hp
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ip saddr $lan ip daddr $lan ct status dnat snat to $pub
    oifname "wan" masquerade
  }
  chain record { type filter hook postrouting priority 200; policy accept;
    oifname "wan" meta l4proto udp ct direction original update @hp { udp sport : ct original ip saddr . ct original proto-src }
  }
}
EOF
        ;;
    *) die "unknown NAT type $nat" ;;
    esac
}

# miniupnpd answers once its STUN self-test has passed (bounded: 10 s).
wait_miniupnpd() {
    local log=$1/$2-miniupnpd.log
    for _ in $(seq 1 100); do
        grep -q 'Port forwarding is now disabled' "$log" 2>/dev/null \
            && die "miniupnpd on $2 turned port forwarding off (see $log)"
        grep -q 'Listening for NAT-PMP/PCP' "$log" 2>/dev/null && return 0
        sleep 0.1
    done
    die "miniupnpd on $2 was not ready within 10 s (see $log)"
}

# nftables for a router running miniupnpd (appended to its NAT's rules). miniupnpd
# writes its DNAT and filter rules into chains of its own table. port_keep holds the
# mapped internal endpoints (kept in sync with miniupnpd's DNAT rules by
# portmap-sync.py) and source-NATs them ahead of the site's masquerade, keeping the
# port: the first NAT chain that binds a flow wins, so `fully-random` never sees them.
# The router's own packets keep their ports too: miniupnpd's STUN self-test (below)
# reads a changed port as "behind a symmetric NAT" and turns port forwarding off.
# Without it a mapped port is reachable inbound but answers new peers from a random
# port, and the host could not be treated as unNATed for that port.
miniupnpd_rules() {
    local pub=$1
    cat <<EOF
table inet miniupnpd {
  chain forward { type filter hook forward priority filter; policy accept;
    jump miniupnpd
  }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting { type nat hook postrouting priority srcnat - 1; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
table ip port_keep {
  set mapped { type ipv4_addr . inet_service; }
  chain post { type nat hook postrouting priority srcnat - 2; policy accept;
    oifname "wan" meta l4proto udp ip saddr . udp sport @mapped snat to $pub
    oifname "wan" ip saddr $pub snat to $pub
  }
}
EOF
}

# Starts miniupnpd (UPnP-IGD, NAT-PMP, PCP) on a site's router, LAN side only, and
# its rule follower. Args: state-dir site router-netns public-ip lan.
start_miniupnpd() {
    local st=$1 site=$2 r=$3 pub=$4 lan=$5 stun_ip=203.0.113.3
    command -v miniupnpd >/dev/null \
        || die "miniupnpd is not installed (site $site needs it): run tests/lab/install-deps.sh"
    cat >"$st/$site-miniupnpd.conf" <<EOF
ext_ifname=wan
ext_perform_stun=yes
ext_stun_host=$stun_ip
ext_stun_port=3478
listening_ip=lan
http_port=5000
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
notify_interval=60
clean_ruleset_interval=600
min_lifetime=1
max_lifetime=86400
uuid=8b7e0a4e-6c1f-4d0e-9a57-$(printf '%012d' "${pub//./}")
lease_file=$st/$site-miniupnpd.leases
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 $lan 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
    setsid ip netns exec "$r" miniupnpd -d -f "$st/$site-miniupnpd.conf" -P "$st/$site-miniupnpd.pid" \
        </dev/null >"$st/$site-miniupnpd.log" 2>&1 &
    echo $! >>"$st/pids"
    setsid ip netns exec "$r" python3 "$HERE/portmap-sync.py" \
        </dev/null >"$st/$site-portmap-sync.log" 2>&1 &
    echo $! >>"$st/pids"
}

main() {
    (($#)) || die "usage: lab.sh up|down|gc|status|exec|loss ... (see the header of lab.sh)"
    local cmd=$1; shift
    case $cmd in
        up) cmd_up "$@" ;;
        down) (($# == 1)) || die "usage: lab.sh down NAME"; cmd_down "$1" ;;
        gc) cmd_gc ;;
        status) (($# == 1)) || die "usage: lab.sh status NAME"; cmd_status "$1" ;;
        exec) (($# >= 3)) || die "usage: lab.sh exec NAME NODE CMD..."; cmd_exec "$@" ;;
        watch) (($# == 1)) || die "usage: lab.sh watch NAME"; cmd_watch "$1" ;;
        loss) (($# == 3 || $# == 4)) || die "usage: lab.sh loss NAME SITE PCT [udp]"; cmd_loss "$@" ;;
        *) die "unknown command '$cmd'" ;;
    esac
}

main "$@"
