#!/usr/bin/env python3
"""Why the accepting side punches first with a small TTL (plain demo, stdlib only).

Two UDP sockets, one per site host, each behind a port-restricted NAT (Linux
masquerade), learn their public endpoints from STUN and swap them through files:

  inviter  (--role inviter):  STUN, write inviter.json, wait for acceptor.json,
                              then send "hello" to the acceptor until "ack" arrives.
  acceptor (--role acceptor): STUN, wait for inviter.json, send the punch toward the
                              inviter's public endpoint with --ttl, write acceptor.json,
                              then wait for "hello" and answer "ack".

Why TTL matters. A Linux NAT keeps a connection-tracking entry for every flow it
sees, including a packet that arrives unsolicited at its public address. If the
acceptor's punch reaches the inviter's NAT (TTL 64) before the inviter has sent
anything toward the acceptor, the NAT records the flow
(acceptor_pub:Pb -> inviter_pub:Pa) and drops it (nobody listens). When the inviter
then sends to acceptor_pub:Pb, masquerade would need the reply tuple
(acceptor_pub:Pb -> inviter_pub:Pa) - already taken by that entry - so it picks
another public port Pa'. The acceptor's NAT only lets in packets from inviter_pub:Pa
(where the punch went), so the hello is dropped: no connection.

With TTL 2 the punch passes the acceptor's own NAT (hop 1, which creates the
mapping the inviter needs) and expires at the next router (hop 2: the public
router, or the first extra router when there are more): it never reaches the
inviter's NAT, the inviter keeps port Pa, and its hello matches the acceptor's
mapping. There must be at least one router between the two NATs for this to work,
which is why the lab is a routed internet and not one shared bridge.

The acceptor never sends a full-TTL packet before the hello arrived (it would
reach the inviter's NAT and cause the same clash). Prints one JSON line; exit 0
when connected, 1 when not, 2 on a usage or setup error.
"""

import argparse
import json
import os
import socket
import struct
import sys
import time

MAGIC = 0x2112A442


def stun_mapped(sock, server, timeout):
    """One STUN binding request (RFC 8489) with retries; returns (ip, port)."""
    tid = os.urandom(12)
    req = struct.pack("!HHI", 0x0001, 0, MAGIC) + tid
    end = time.monotonic() + timeout
    wait = 0.1
    while time.monotonic() < end:
        sock.sendto(req, server)
        sock.settimeout(wait)
        try:
            while True:
                data, src = sock.recvfrom(2048)
                if src == server and len(data) >= 20 and data[8:20] == tid:
                    return parse_mapped(data)
        except socket.timeout:
            wait = min(wait * 2, 0.5)
    raise SystemExit(f"no STUN answer from {server[0]}:{server[1]} within {timeout}s")


def parse_mapped(data):
    mtype, length, magic = struct.unpack("!HHI", data[:8])
    if mtype != 0x0101 or magic != MAGIC or 20 + length > len(data):
        raise SystemExit("malformed STUN response")
    pos, mapped = 20, None
    while pos + 4 <= 20 + length:
        atype, alen = struct.unpack("!HH", data[pos:pos + 4])
        val = data[pos + 4:pos + 4 + alen]
        if atype in (0x0020, 0x0001) and alen >= 8 and val[1] == 0x01:
            port, = struct.unpack("!H", val[2:4])
            addr, = struct.unpack("!I", val[4:8])
            if atype == 0x0020:  # XOR-MAPPED-ADDRESS
                port ^= MAGIC >> 16
                addr ^= MAGIC
            ip = socket.inet_ntoa(struct.pack("!I", addr))
            if atype == 0x0020 or mapped is None:
                mapped = (ip, port)
        pos += 4 + ((alen + 3) & ~3)
    if mapped is None:
        raise SystemExit("STUN response without a mapped address")
    return mapped


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)  # the peer never reads a half-written file


def wait_json(path, deadline):
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            time.sleep(0.01)
    raise SystemExit(f"peer file {path} did not appear in time")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["inviter", "acceptor"], required=True)
    ap.add_argument("--dir", required=True, help="directory shared by both sides")
    ap.add_argument("--stun", required=True, help="STUN server IP[:PORT]")
    ap.add_argument("--ttl", type=int, default=2, help="acceptor's punch TTL")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the peer")
    a = ap.parse_args()
    host, _, port = a.stun.partition(":")
    server = (host, int(port or 3478))

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    local_port = sock.getsockname()[1]
    mapped = stun_mapped(sock, server, 3.0)
    me = {"mapped": f"{mapped[0]}:{mapped[1]}", "local_port": local_port}
    deadline = time.monotonic() + a.timeout + 5.0
    result = {"role": a.role, "local_port": local_port, "mapped": me["mapped"],
              "ttl": a.ttl if a.role == "acceptor" else None, "connected": False}

    if a.role == "inviter":
        write_json(os.path.join(a.dir, "inviter.json"), me)
        peer = wait_json(os.path.join(a.dir, "acceptor.json"), deadline)
        pip, _, pport = peer["mapped"].partition(":")
        dst = (pip, int(pport))
        end = time.monotonic() + a.timeout
        sock.settimeout(0.1)
        while time.monotonic() < end and not result["connected"]:
            sock.sendto(b"hello", dst)
            try:
                data, src = sock.recvfrom(2048)
                if src == dst and data == b"ack":
                    result["connected"] = True
            except socket.timeout:
                pass
    else:
        peer = wait_json(os.path.join(a.dir, "inviter.json"), deadline)
        pip, _, pport = peer["mapped"].partition(":")
        dst = (pip, int(pport))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, a.ttl)
        sock.sendto(b"punch", dst)
        write_json(os.path.join(a.dir, "acceptor.json"), me)
        end = time.monotonic() + a.timeout
        next_punch = time.monotonic() + 0.2
        sock.settimeout(0.05)
        while time.monotonic() < end:
            if time.monotonic() >= next_punch:  # keep the own mapping open, same TTL
                sock.sendto(b"punch", dst)
                next_punch += 0.2
            try:
                data, src = sock.recvfrom(2048)
            except socket.timeout:
                continue
            if src[0] == dst[0] and data == b"hello":
                result["connected"] = True
                result["hello_from"] = f"{src[0]}:{src[1]}"
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
                for _ in range(5):
                    sock.sendto(b"ack", src)
                    time.sleep(0.02)
                break
    print(json.dumps(result), flush=True)
    return 0 if result["connected"] else 1


if __name__ == "__main__":
    sys.exit(main())
