#!/usr/bin/env python3
"""Steady HTTP load for the demo, counting every answer by version and every failure.

    load.py URL COUNTS_FILE [--threads 4] [--rate 400]

Each thread keeps one keep-alive connection and sends GET URL at its share of
--rate requests a second. An answer "sample-service <version>" counts for that
version; anything else (a status other than 200, a refused or dropped
connection, a time-out) counts as failed. The counts are written to
COUNTS_FILE (JSON, replaced atomically) four times a second and on SIGTERM.
Python 3 standard library only.
"""

import argparse
import http.client
import json
import os
import signal
import threading
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("counts")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rate", type=float, default=400.0)
    args = p.parse_args()
    url = urllib.parse.urlsplit(args.url)
    counts = {"failed": 0, "versions": {}, "errors": {}}
    lock = threading.Lock()
    stop = threading.Event()

    def record(version=None, error=None):
        with lock:
            if version is not None:
                counts["versions"][version] = counts["versions"].get(version, 0) + 1
            else:
                counts["failed"] += 1
                counts["errors"][error] = counts["errors"].get(error, 0) + 1

    def worker():
        period = args.threads / args.rate
        conn = None
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
                conn.request("GET", url.path or "/")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace").strip()
                if resp.status == 200 and body.startswith("sample-service "):
                    record(version=body.split(" ", 1)[1])
                else:
                    record(error=f"status {resp.status}")
            except Exception as e:  # noqa: BLE001 (every failure counts)
                record(error=type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()

    def write():
        with lock:
            text = json.dumps(counts)
        tmp = args.counts + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.counts)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    while not stop.is_set():
        write()
        stop.wait(0.25)
    for t in threads:
        t.join(timeout=6)
    write()


if __name__ == "__main__":
    main()
