#!/usr/bin/env bash
# Installs the Debian packages plexus's lab, build and tests need (as root), and
# nothing when they are all there. Shared by tests/run-all.sh and quickstart.sh.
# Package scripts are kept from starting coturn/postfix/dovecot on the host: the lab
# starts its own instances inside network namespaces.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "install-deps.sh: run as root (it installs packages)" >&2; exit 1; }

PKGS=(coturn postfix dovecot-imapd dovecot-lmtpd nftables iproute2 conntrack python3 openssl gpgsm gpg-agent
      miniupnpd-nftables
      ca-certificates procps coreutils build-essential pkg-config libssl-dev
      # The tunnel plugin's tests and benchmark (part g): sshd and iperf3 run in the lab.
      openssh-server openssh-client iperf3)
missing=()
for p in "${PKGS[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]})) || exit 0

echo "installing: ${missing[*]}"
policy=/usr/sbin/policy-rc.d made_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1
fi
cleanup() { if ((made_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
