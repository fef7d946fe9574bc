#!/usr/bin/env python3
"""A small HTTP service for the demo and the tests: the thing a stack runs.

    sample_service.py --port 8081 --version 1.4.2 [--broken | --fail-version 'rc']
                      [--pid-file svc.pid] [--log-file svc.log] [--daemon]
    sample_service.py --stop svc.pid

Serves on 127.0.0.1 (``--host`` to change):
  /         200, "sample-service <version>"
  /health   200 {"status": "ok", "version": ...}; 500 {"status": "failing", ...}
            when started with --broken or when the version matches --fail-version
            (a regular expression); with --breaks-after N, 500 once N
            requests to / were served
  /version  200, the version alone
HTTP/1.1 with keep-alive on a thread per connection (ThreadingHTTPServer), so a
probe engine can send thousands of requests a second. SIGTERM and SIGINT shut it
down cleanly: the listener closes, requests in flight finish, the pid file is
removed. --daemon detaches (double fork, new session, output to --log-file) and
returns only once the port is bound and the pid file written, so that an
orchestrator's `up` command can start it and go on; it exits 1 with the log's
tail if the service could not start (e.g. the port is taken). --stop sends
SIGTERM to the pid in the file and waits until the process is gone.
Python 3 standard library only.
"""

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_args(argv):
    p = argparse.ArgumentParser(description="A small HTTP service for switchyard's demo and tests")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, help="port to listen on")
    p.add_argument("--version", default="0.0.0", help="the version it reports")
    p.add_argument("--broken", action="store_true", help="/health answers 500")
    p.add_argument("--breaks-after", type=int, metavar="N",
                   help="/health answers 500 once N requests to / have been served (a release "
                        "that breaks under traffic)")
    p.add_argument("--fail-version", metavar="REGEX",
                   help="/health answers 500 when the version matches this regular expression")
    p.add_argument("--pid-file", help="write the pid here once listening; removed on exit")
    p.add_argument("--log-file", help="with --daemon: where its output goes (default /dev/null)")
    p.add_argument("--daemon", action="store_true", help="detach once listening")
    p.add_argument("--stop", metavar="PID_FILE", help="stop the service whose pid is in this file")
    args = p.parse_args(argv)
    if args.stop is None and args.port is None:
        p.error("--port is required (or --stop PID_FILE)")
    if args.daemon and not args.pid_file:
        p.error("--daemon needs --pid-file (it is how the starter knows the service is up)")
    if args.fail_version is not None:
        try:
            re.compile(args.fail_version)
        except re.error as e:
            p.error(f"--fail-version is not a regular expression: {e}")
    return args


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sample-service"
    # One write per response, sent at once: without these, headers and body go
    # out as two segments and delayed ACKs cap a connection at ~25 requests/s.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self):  # noqa: N802 (the http.server API)
        state = self.server.app
        path = self.path.split("?", 1)[0]
        if path == "/":
            with state["lock"]:
                state["served"] += 1
                if state["breaks_after"] is not None and state["served"] >= state["breaks_after"]:
                    state["failing"] = True
            self.reply(200, "text/plain", f"sample-service {state['version']}\n")
        elif path == "/health":
            with state["lock"]:
                ok = not state["failing"]
            body = json.dumps({"status": "ok" if ok else "failing", "version": state["version"]})
            self.reply(200 if ok else 500, "application/json", body + "\n")
        elif path == "/version":
            self.reply(200, "text/plain", state["version"] + "\n")
        else:
            self.reply(404, "text/plain", "not found\n")

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def reply(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (the http.server API)
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def serve(args, ready_fd=None):
    failing = args.broken or bool(args.fail_version and re.search(args.fail_version, args.version))
    server = Server((args.host, args.port), Handler)
    server.app = {"version": args.version, "failing": failing,
                  "breaks_after": args.breaks_after, "served": 0, "lock": threading.Lock()}
    if args.pid_file:
        tmp = f"{args.pid_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, args.pid_file)
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)

    def stop(signum, _frame):
        print(f"sample-service: signal {signum}, shutting down", file=sys.stderr, flush=True)
        # shutdown() waits for serve_forever to return: call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"sample-service {args.version} listening on {args.host}:{server.server_address[1]}"
          f"{' (health failing)' if failing else ''}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.pid_file:
            try:
                if open(args.pid_file).read().strip() == str(os.getpid()):
                    os.remove(args.pid_file)
            except OSError:
                pass
    print("sample-service: stopped", file=sys.stderr, flush=True)
    return 0


def daemonize(args):
    """Starts the service detached; returns once it listens (0) or died (1)."""
    for stale in (args.pid_file,):
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass
    log = args.log_file or os.devnull
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            code = serve(args, ready_w)
        except Exception as e:  # noqa: BLE001 (report anything, then exit non-zero)
            print(f"sample-service: cannot start: {e}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    os.close(ready_w)
    os.waitpid(child, 0)
    # "ok" once listening; end of file without it when the service died first.
    if os.read(ready_r, 2) == b"ok":
        pid = int(open(args.pid_file).read().strip())
        print(f"sample-service {args.version} started on {args.host}:{args.port} (pid {pid})")
        return 0
    tail = ""
    if args.log_file and os.path.exists(args.log_file):
        tail = "".join(open(args.log_file).readlines()[-20:])
    print(f"sample-service did not start on {args.host}:{args.port}\n{tail}",
          file=sys.stderr)
    return 1


def stop(pid_file):
    try:
        pid = int(open(pid_file).read().strip())
    except FileNotFoundError:
        print(f"sample-service: no pid file {pid_file}; nothing to stop")
        return 0
    except ValueError:
        print(f"sample-service: {pid_file} holds no pid", file=sys.stderr)
        return 2
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"sample-service: pid {pid} is not running")
        os.remove(pid_file)
        return 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not os.path.exists(pid_file) or not running(pid):
            print(f"sample-service: stopped pid {pid}")
            return 0
        time.sleep(0.05)
    print(f"sample-service: pid {pid} still runs 10s after SIGTERM", file=sys.stderr)
    return 1


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def main(argv):
    args = parse_args(argv)
    if args.stop:
        return stop(args.stop)
    if args.daemon:
        return daemonize(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
