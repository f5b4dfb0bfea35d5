#!/bin/sh
# The lab's mail host: postfix (submission on 465 implicit TLS and 587 STARTTLS, SASL AUTH
# through dovecot) delivering over LMTP to dovecot (IMAPS on 993 with IDLE), inside an
# existing network namespace, configured only by files under <statedir>/mail/.
#
#   tests/lab/mail.sh start <netns> <ip> <statedir> [<ip6>]
#                                                      start (idempotent), write <statedir>/mail.json
#                                                      (<ip6>: the host's IPv6 address, for mail.json)
#   tests/lab/mail.sh stop <statedir>                  stop those daemons by PID, remove the files
#   tests/lab/mail.sh restart-imap <statedir>          restart dovecot only (tests of reconnects)
#
# Nothing global is changed: postfix runs with `-c <statedir>/mail/postfix/etc` (its own
# main.cf and master.cf naming its own queue and data directories), dovecot with `-c <statedir>/mail/dovecot/dovecot.conf`
# (its own base_dir, state_dir and log). Only the existing system users postfix, dovecot,
# dovenull and mail are used; mail is stored as uid `mail`. The one thing done outside
# <statedir>/mail is making <statedir> traversable (o+x) so those users can reach their files.
# TLS uses certs/lab (a test-only CA), keys are copied in with mode 0600.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CERTS=$(cd "$HERE/../../certs/lab" && pwd)
# alice..dave for the mail tests; p01..p200 a pool the corridor tests take mailboxes
# from, so that tests running at the same time never read each other's mail.
ACCOUNTS="alice bob carol dave $(seq -f 'p%02g' 1 200 | tr '\n' ' ')"
NACCOUNTS=$(echo $ACCOUNTS | wc -w)
DOMAIN=lab.example
HOST=mail.lab.example

die() { echo "mail.sh: $*" >&2; exit 1; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

pid_of() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

# Is something listening on TCP port $2 inside netns $1? (bounded: caller loops)
listening() {
    ip netns exec "$1" ss -Htln "sport = :$2" 2>/dev/null | grep -q LISTEN
}

stop() {
    sd=$1
    m=$sd/mail
    [ -d "$m" ] || { rm -f "$sd/mail.json"; return 0; }
    for pidfile in "$m/postfix/queue/pid/master.pid" "$m/dovecot/run/master.pid"; do
        p=$(pid_of "$pidfile")
        alive "$p" || continue
        # The masters' children: terminated by their master, killed by PID if they linger.
        kids=$(ps -o pid= --ppid "$p" 2>/dev/null || true)
        kill -TERM "$p" 2>/dev/null || true
        i=0
        while alive "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        alive "$p" && kill -KILL "$p" 2>/dev/null || true
        for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null || true; done
    done
    rm -rf "$m" "$sd/mail.json"
}

write_json() {
    sd=$1 ns=$2 ip=$3 ip6=$4
    {
        printf '{"netns":"%s","ip":"%s","host":"%s","domain":"%s",' "$ns" "$ip" "$HOST" "$DOMAIN"
        [ -z "$ip6" ] || printf '"ip6":"%s",' "$ip6"
        printf '"smtps_port":465,"submission_port":587,"imaps_port":993,'
        printf '"ca_file":"%s","log_files":["%s","%s"],"accounts":[' "$CERTS/ca.pem" \
            "$sd/mail/postfix.log" "$sd/mail/dovecot.log"
        sep=
        while IFS=: read -r login pw _; do
            printf '%s{"address":"%s","login":"%s","password":"%s"}' "$sep" "$login" "$login" "$pw"
            sep=,
        done <"$sd/mail/passwords"
        printf ']}\n'
    } >"$sd/mail.json.tmp"
    mv "$sd/mail.json.tmp" "$sd/mail.json"
}

start() {
    ns=$1 ip=$2 sd=$3 ip6=$4
    ip netns list | grep -qw "^$ns" || die "network namespace $ns does not exist (create it first)"
    mkdir -p "$sd"
    sd=$(cd "$sd" && pwd)
    m=$sd/mail
    # Idempotent: both masters alive and listening -> nothing to do.
    if [ -s "$sd/mail.json" ] && alive "$(pid_of "$m/postfix/queue/pid/master.pid")" &&
        alive "$(pid_of "$m/dovecot/run/master.pid")" && listening "$ns" 465 &&
        listening "$ns" 993; then
        return 0
    fi
    stop "$sd"

    chmod o+x "$sd"
    # The daemons' unprivileged users must traverse every directory above their files.
    d=$(dirname "$sd")
    while [ "$d" != / ]; do
        case $(stat -c %a "$d") in
        *[1357]) ;;
        *) die "$d is not traversable by other users (o+x); the postfix, dovecot and mail users need to reach $m" ;;
        esac
        d=$(dirname "$d")
    done
    mkdir -p "$m/tls" "$m/postfix/etc" "$m/postfix/queue" "$m/postfix/data" "$m/dovecot/run" \
        "$m/dovecot/state" "$m/vmail"
    chmod 0755 "$m" "$m/postfix" "$m/postfix/etc" "$m/dovecot"
    install -m 0644 "$CERTS/mail.pem" "$m/tls/mail.pem"
    install -m 0600 "$CERTS/mail.key" "$m/tls/mail.key"
    chown postfix:postfix "$m/postfix/data"
    chmod 0700 "$m/postfix/data"
    chown mail:mail "$m/vmail"
    chmod 0700 "$m/vmail"

    # Accounts: login = address, fresh random password per lab.
    : >"$m/passwords"
    : >"$m/dovecot/users"
    : >"$m/postfix/etc/vmailbox"
    # One openssl call for all passwords: 44 separate ones cost a visible part of start.
    openssl rand -hex $((12 * NACCOUNTS)) | fold -w 24 >"$m/pwpool"
    i=0
    for a in $ACCOUNTS; do
        i=$((i + 1))
        pw=$(sed -n "${i}p" "$m/pwpool")
        echo "$a@$DOMAIN:$pw" >>"$m/passwords"
        echo "$a@$DOMAIN:{PLAIN}$pw:8:8::$m/vmail/$a::" >>"$m/dovecot/users"
        echo "$a@$DOMAIN OK" >>"$m/postfix/etc/vmailbox"
    done
    rm -f "$m/pwpool"
    chmod 0600 "$m/passwords"
    chown root:dovecot "$m/dovecot/users"
    chmod 0640 "$m/dovecot/users"

    cat >"$m/dovecot/dovecot.conf" <<EOF
# plexus lab dovecot: everything under $m
base_dir = $m/dovecot/run
state_dir = $m/dovecot/state
instance_name = plexus-lab-$ns
log_path = $m/dovecot.log
info_log_path = $m/dovecot.log
protocols = imap lmtp
# Both families: the lab mail host is reachable over IPv4 and IPv6.
listen = *, ::
ssl = required
ssl_cert = <$m/tls/mail.pem
ssl_key = <$m/tls/mail.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = 8
last_valid_uid = 8
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $m/dovecot/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $m/dovecot/users
}
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0600
    user = postfix
    group = postfix
  }
}
protocol imap {
  imap_idle_notify_interval = 1 mins
}
EOF

    # Config in its own directory: postfix-script checks the config tree for root
    # ownership recursively, which the queue and data directories must not be part of.
    pf=$m/postfix/etc
    cat >"$pf/main.cf" <<EOF
# plexus lab postfix: everything under $pf
compatibility_level = 3.6
queue_directory = $m/postfix/queue
data_directory = $m/postfix/data
maillog_file = $m/postfix.log
maillog_file_prefixes = $m
myhostname = $HOST
mydomain = $DOMAIN
myorigin = $DOMAIN
mydestination =
inet_interfaces = all
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
relayhost =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$m/postfix/etc/vmailbox
virtual_transport = lmtp:unix:$m/dovecot/run/lmtp
smtpd_banner = \$myhostname ESMTP plexus-lab
smtpd_tls_cert_file = $m/tls/mail.pem
smtpd_tls_key_file = $m/tls/mail.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_sasl_type = dovecot
smtpd_sasl_path = $m/dovecot/run/auth-postfix
smtpd_sasl_auth_enable = no
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
biff = no
append_dot_mydomain = no
readme_directory = no
message_size_limit = 10240000
delay_warning_time = 0
EOF
    # No chroot anywhere: the sockets and files live under the state directory.
    cat >"$pf/master.cf" <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command
smtps     inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

    # dovecot first: postfix needs its auth and lmtp sockets.
    # Daemons get no inherited stdio: a caller reading our output to EOF must not hang.
    ip netns exec "$ns" dovecot -c "$m/dovecot/dovecot.conf" </dev/null >>"$m/dovecot.log" 2>&1 ||
        die "dovecot failed to start; see $m/dovecot.log"
    # postfix: `postfix start` runs its checks (ownership of the queue directory, which
    # post-install creates root-owned with postfix-owned subdirectories) then the master.
    ip netns exec "$ns" postfix -c "$pf" start </dev/null >"$m/postfix-start.out" 2>&1 ||
        die "postfix failed to start: $(cat "$m/postfix-start.out"); see $m/postfix.log"

    i=0
    until listening "$ns" 465 && listening "$ns" 587 && listening "$ns" 993 &&
        [ -S "$m/dovecot/run/auth-postfix" ] && [ -S "$m/dovecot/run/lmtp" ]; do
        i=$((i + 1))
        [ $i -le 100 ] || {
            stop "$sd" >/dev/null 2>&1 || true
            die "mail daemons did not listen on 465/587/993 within 10 s in $ns"
        }
        sleep 0.1
    done
    echo "$ns" >"$m/netns"
    write_json "$sd" "$ns" "$ip" "$ip6"
}

# Stop dovecot by PID and start it again with the same configuration (postfix keeps
# running; its LMTP deliveries wait in the queue meanwhile).
restart_imap() {
    m=$1/mail
    ns=$(cat "$m/netns" 2>/dev/null) || die "no mail host running under $1"
    p=$(pid_of "$m/dovecot/run/master.pid")
    if alive "$p"; then
        kids=$(ps -o pid= --ppid "$p" 2>/dev/null || true)
        kill -TERM "$p"
        i=0
        while alive "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        alive "$p" && kill -KILL "$p" 2>/dev/null || true
        for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null || true; done
    fi
    ip netns exec "$ns" dovecot -c "$m/dovecot/dovecot.conf" </dev/null >>"$m/dovecot.log" 2>&1 ||
        die "dovecot failed to restart; see $m/dovecot.log"
    i=0
    until listening "$ns" 993; do
        i=$((i + 1))
        [ $i -le 100 ] || die "dovecot did not listen on 993 within 10 s after restart"
        sleep 0.1
    done
}

case "${1:-}" in
start)
    [ $# -eq 4 ] || [ $# -eq 5 ] || die "usage: $0 start <netns> <ip> <statedir> [<ip6>]"
    [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, daemons)"
    start "$2" "$3" "$4" "${5:-}"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: $0 stop <statedir>"
    [ -d "$2" ] || exit 0
    stop "$(cd "$2" && pwd)"
    ;;
restart-imap)
    [ $# -eq 2 ] || die "usage: $0 restart-imap <statedir>"
    restart_imap "$(cd "$2" && pwd)"
    ;;
*)
    die "usage: $0 start <netns> <ip> <statedir> [<ip6>] | stop <statedir> | restart-imap <statedir>"
    ;;
esac
