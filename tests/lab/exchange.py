#!/usr/bin/env python3
"""Executor used by the corridor tests: proves the punched path carries datagrams.

plexus starts it with the article's six arguments
    innerip innerport outerip outerport peerip peerport
after releasing the punched socket. It binds the same local endpoint, sends numbered
greetings to the peer and answers the peer's greetings, until it has both received a
greeting and seen its own greeting acknowledged (or a bounded time passes). The outcome
goes as one JSON line to the file named by EXCHANGE_OUT (and stdout); exit 0 only when
datagrams went both ways.

EXCHANGE_HOLD=N (seconds) keeps the path busy afterwards: both sides send a numbered
tick every half second for N seconds and count the peer's ticks ("held" in the result),
so a test can show a path (a relayed one: allocation, permission and channel refreshed)
still carries traffic at the end of a long run.
"""
import json
import os
import socket
import sys
import time

TOTAL_SECONDS = float(os.environ.get("EXCHANGE_SECONDS", "10"))
HOLD_SECONDS = min(float(os.environ.get("EXCHANGE_HOLD", "0")), 600.0)


def hold(sock, peer, seconds):
    """Ticks both ways for `seconds`: how many we got, and when the last one came."""
    start = time.monotonic()
    end = start + seconds
    next_tick, n, got, last = start, 0, 0, None
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_tick:
            sock.sendto(f"tick {n}".encode(), peer)
            n += 1
            next_tick += 0.5
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if data.startswith(b"tick "):
            got += 1
            last = time.monotonic() - start
        elif data.startswith(b"hello "):
            sock.sendto(b"ack " + data, peer)
    return {"seconds": seconds, "sent": n, "received": got, "last_at": last}


def main() -> int:
    if len(sys.argv) != 7:
        print("usage: exchange.py innerip innerport outerip outerport peerip peerport", file=sys.stderr)
        return 2
    inner = (sys.argv[1], int(sys.argv[2]))
    peer = (sys.argv[5], int(sys.argv[6]))
    me = os.environ.get("PLEXUS_HOST_ID", "?")
    key = os.environ.get("PLEXUS_KEY", "")
    # IPv6 addresses come without brackets, as `ip` and `socat` take them.
    family = socket.AF_INET6 if ":" in inner[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(inner)
    sock.settimeout(0.1)
    got_greeting = None
    got_ack = False
    sent = 0
    deadline = time.monotonic() + TOTAL_SECONDS
    while time.monotonic() < deadline and not (got_greeting and got_ack):
        if not got_ack:
            sock.sendto(f"hello {sent} from {me}".encode(), peer)
            sent += 1
        try:
            data, src = sock.recvfrom(2048)
        except socket.timeout:
            continue
        text = data.decode(errors="replace")
        if text.startswith("hello "):
            got_greeting = {"text": text, "from": f"{src[0]}:{src[1]}"}
            sock.sendto(f"ack {text}".encode(), src)
        elif text.startswith("ack "):
            got_ack = True
    # Keep answering briefly so a slower peer gets its acknowledgement too.
    linger = time.monotonic() + 1.0
    while time.monotonic() < linger:
        try:
            data, src = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if data.startswith(b"hello "):
            sock.sendto(b"ack " + data, src)
    held = hold(sock, peer, HOLD_SECONDS) if HOLD_SECONDS > 0 and got_greeting and got_ack else None
    result = {
        "held": held,
        "host": me,
        "inner": f"{inner[0]}:{inner[1]}",
        "outer": f"{sys.argv[3]}:{sys.argv[4]}",
        "peer": f"{peer[0]}:{peer[1]}",
        "argv": sys.argv[1:],
        "env_peer": os.environ.get("PLEXUS_PEER", ""),
        "received": got_greeting,
        "acknowledged": got_ack,
        "sent": sent,
        "key_len": len(key),
    }
    line = json.dumps(result)
    print(line)
    out = os.environ.get("EXCHANGE_OUT")
    if out:
        with open(out + ".tmp", "w") as f:
            f.write(line + "\n")
        os.replace(out + ".tmp", out)
    return 0 if (got_greeting and got_ack) else 1


if __name__ == "__main__":
    sys.exit(main())
