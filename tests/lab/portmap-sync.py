#!/usr/bin/env python3
"""Keeps the lab router's `port_keep` set equal to miniupnpd's UDP DNAT rules.

Runs in the router's namespace. Follows `nft monitor` (no polling): every UDP
`dnat to IP:PORT` rule miniupnpd adds to prerouting_miniupnpd puts IP . PORT in
`ip port_keep mapped`; deleting the rule (by handle) takes it out. See lab.sh,
miniupnpd_rules, for why the router needs this.
"""
import re
import subprocess
import sys
import time

# miniupnpd writes raw matches: `@nh,72,8 0x11` is "IP protocol 17", UDP.
ADD = re.compile(r'^add rule inet miniupnpd prerouting_miniupnpd .*(?:\budp\b|@nh,72,8 0x11).*'
                 r'dnat ip to (\d+\.\d+\.\d+\.\d+):(\d+).*# handle (\d+)')
DEL = re.compile(r'^delete rule inet miniupnpd prerouting_miniupnpd handle (\d+)')


def nft(*args):
    r = subprocess.run(['nft', *args], capture_output=True, text=True, timeout=5)
    if r.returncode != 0:
        print(f'nft {" ".join(args)}: {r.stderr.strip()}', file=sys.stderr, flush=True)


def main():
    by_handle = {}
    count = {}  # element -> rules for it (two mappings of one endpoint share it)
    mon = subprocess.Popen(['nft', '-a', 'monitor', 'rules'], stdout=subprocess.PIPE, text=True)
    for line in mon.stdout:
        line = line.strip()
        m = ADD.match(line)
        if m:
            ip, port, handle = m.groups()
            elem = by_handle[handle] = f'{ip} . {port}'
            count[elem] = count.get(elem, 0) + 1
            if count[elem] == 1:
                nft('add', 'element', 'ip', 'port_keep', 'mapped', '{', elem, '}')
            print(f'{time.time():.3f} keep {elem} (rule {handle})', flush=True)
            continue
        m = DEL.match(line)
        if m and m.group(1) in by_handle:
            elem = by_handle.pop(m.group(1))
            count[elem] -= 1
            if count[elem] == 0:
                del count[elem]
                nft('delete', 'element', 'ip', 'port_keep', 'mapped', '{', elem, '}')
            print(f'{time.time():.3f} drop {elem} (rule {m.group(1)})', flush=True)
    sys.exit(mon.wait())


if __name__ == '__main__':
    main()
