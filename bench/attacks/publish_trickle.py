#!/usr/bin/env python3
"""Reproduces issue #11 defect 4: keyless POSTs to /api/v1/publish that announce a big body
and trickle it slowly, to see whether the server answers them (401) before reading the body or
holds every one open, buffering what arrives.

Starts the given server binary on a free loopback port (in-process broker, publish API key
set, 2 workers), opens CONNECTIONS keyless POSTs with `Content-Length: LENGTH`, each sending
RATE bytes a second for at most DURATION seconds (a connection stops once it is answered or
closed), and reports the server's RSS (VmRSS of /proc/PID/status) before, at its peak during
and after the attack, how many requests were answered (and with which status) and how fast.
Loopback only, bounded in count and time; stops the server and exits by itself.

    python3 bench/attacks/publish_trickle.py --binary target/debug/websocket-service
    python3 bench/attacks/publish_trickle.py --binary /tmp/old-server --duration 30 --json out.json
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from attacklib import HOST, free_port, open_files, rss_mib, wait_healthy
# Connections opened at the same time (the rest wait), so the listen backlog never overflows.
CONNECT_CONCURRENCY = 200
# Whatever happens, the whole run ends after DURATION plus this.
HARD_MARGIN_S = 30


def write_settings(directory, port):
    path = os.path.join(directory, "settings.toml")
    with open(path, "w") as settings:
        settings.write(
            f'[server]\nbind = "{HOST}:{port}"\nworkers = 2\n\n'
            f'[auth]\njwt_secret = "{secrets.token_hex(24)}"\n\n'
            '[redis]\nurl = ""\n\n'
            f'[api]\npublish_api_key = "{secrets.token_hex(16)}"\n'
        )
    return path


class Outcome:
    def __init__(self):
        self.status = None  # HTTP status of the answer, if any
        self.answered_after = None  # seconds from the request head to the status line
        self.closed_after = None  # seconds from the request head to the server closing
        self.error = None


async def trickle_one(port, args, gate, stop_at):
    outcome = Outcome()
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
        except (OSError, asyncio.TimeoutError) as err:
            outcome.error = f"connect: {err!r}"
            return outcome
    started = time.monotonic()
    head = (
        f"POST /api/v1/publish HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {args.length}\r\n\r\n"
    )

    async def send():
        writer.write(head.encode())
        sent = 0
        while sent < args.length and time.monotonic() < stop_at:
            await writer.drain()
            await asyncio.sleep(1)
            piece = min(args.rate, args.length - sent)
            writer.write(b" " * piece)
            sent += piece

    async def receive():
        line = await reader.readline()
        if line.startswith(b"HTTP/"):
            outcome.status = int(line.split()[1])
            outcome.answered_after = time.monotonic() - started
        while await reader.read(65536):
            pass
        outcome.closed_after = time.monotonic() - started

    sender = asyncio.ensure_future(send())
    receiver = asyncio.ensure_future(receive())
    try:
        remaining = max(0.0, stop_at - time.monotonic())
        await asyncio.wait({sender, receiver}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if not receiver.done() and outcome.status is not None:
            # Answered: give the server a moment to close the connection as it should.
            await asyncio.wait({receiver}, timeout=2)
    except (OSError, ValueError) as err:
        outcome.error = repr(err)
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        writer.close()
    return outcome


async def sample_rss(pid, samples, done):
    while not done.is_set():
        samples.append((time.monotonic(), rss_mib(pid), open_files(pid)))
        try:
            await asyncio.wait_for(done.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def attack(pid, port, args):
    await asyncio.sleep(1)
    rss_before = rss_mib(pid)
    samples = []
    done = asyncio.Event()
    sampler = asyncio.ensure_future(sample_rss(pid, samples, done))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.monotonic()
    stop_at = started + args.duration
    outcomes = await asyncio.gather(*(trickle_one(port, args, gate, stop_at) for _ in range(args.connections)))
    attack_s = time.monotonic() - started
    await asyncio.sleep(3)
    done.set()
    await sampler
    rss_after = rss_mib(pid)
    answered = [o for o in outcomes if o.status is not None]
    latencies = [o.answered_after for o in answered]
    statuses = {}
    for o in answered:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    open_at_end = [o for o in outcomes if o.closed_after is None and o.error is None]
    during = [rss for _, rss, _ in samples if rss is not None]
    fds = [n for _, _, n in samples if n is not None]
    return {
        "connections": args.connections,
        "content_length": args.length,
        "trickle_bytes_per_s": args.rate,
        "duration_s": args.duration,
        "attack_wall_s": round(attack_s, 1),
        "rss_mib": {
            "before": round(rss_before, 1) if rss_before else None,
            "peak_during": round(max(during), 1) if during else None,
            "after": round(rss_after, 1) if rss_after else None,
        },
        "server_open_files_peak": max(fds) if fds else None,
        "answered": len(answered),
        "statuses": statuses,
        "answer_seconds": {
            "p50": round(percentile(latencies, 50), 3) if latencies else None,
            "p99": round(percentile(latencies, 99), 3) if latencies else None,
            "max": round(max(latencies), 3) if latencies else None,
        },
        "still_open_when_the_attack_ended": len(open_at_end),
        "client_errors": sum(1 for o in outcomes if o.error),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="websocket-service binary to attack")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--length", type=int, default=250_000, help="declared Content-Length")
    parser.add_argument("--rate", type=int, default=1024, help="body bytes per second per connection")
    parser.add_argument("--duration", type=float, default=30, help="seconds of trickling at most")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args()
    if not 1 <= args.connections <= 5000:
        raise SystemExit("--connections must be 1..5000 (the process stays under 20,000 open files)")

    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        config = write_settings(directory, port)
        log = open(os.path.join(directory, "server.log"), "w")
        server = subprocess.Popen(
            [args.binary, "--config", config], stdout=log, stderr=subprocess.STDOUT, cwd=directory
        )
        try:
            asyncio.run(wait_healthy(port))
            report = asyncio.run(
                asyncio.wait_for(attack(server.pid, port, args), args.duration + HARD_MARGIN_S)
            )
            report["binary"] = args.binary
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
