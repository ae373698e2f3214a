#!/usr/bin/env python3
"""Soak and flood load for a running `hardy serve` (benches/soak.sh starts the server and runs this).

Soak (default): --clients threads (16) send a mix for --duration seconds (600), as fast as the
server answers:
  good       classify a raw PNG; OIP JSON BYTES (one base64 PNG); OIP binary FP32, a batch of 8
             (binary output). Each must be answered 200 with a well-formed body.
  malformed  invalid JSON; a wrong FP32 shape; an undecodable image; a wrong content type; a
             binary_data_size larger than the data. Each must be answered 4xx with a JSON
             {"error": "..."} body.
  hung-up    headers and part of the body, then the socket closed (half of them with a reset);
             a whole request sent slowly in pieces, then closed before the answer is read.
Good and malformed requests reuse one keep-alive connection per client (a request that finds
its reused connection closed by the server before any answer byte is retried once on a fresh
one, as HTTP clients do); hung-up ones use a socket of their own.

Every second the server's VmRSS, thread count and open file descriptors are read from /proc.
Printed: RSS after readiness before load, after 1 minute of load, at the end and the peak;
RSS growth from the 1-minute sample to the end (goal < 5%); requests by kind and status with
latency percentiles; and every unexpected event: a 5xx, a reset or early close on a request
not meant to hang up, a timeout, a good request not answered 200, a malformed one not answered
4xx with a JSON error body.

Flood (--flood): --clients threads (32) each send maximal requests for --duration seconds (60):
an OIP binary FP32 request with as many images as fit just under --max-body-bytes, and a JSON
classify of as many base64 PNGs as fit. 200, 413 and 503 (with Retry-After) are expected. The
peak RSS is printed next to the memory budgets the server runs with (from --server-flags, the
server's model config where it reports them, else the server's defaults).

Exit status: 0; 1 if there was an unexpected event; 2 if the server died.
Python 3 standard library only.
"""

import argparse
import base64
import json
import os
import random
import select
import shlex
import socket
import struct
import sys
import threading
import time

MIB = 1 << 20
# The server's defaults for the budgets (hardy serve --help, engine's BatchingConfig).
DEFAULT_BUDGETS = {
    "max-body-bytes": 64 * MIB,
    "max-inflight-body-bytes": 1 << 30,
    "max-queue-images": 4096,
    "max-queue-bytes": 512 * MIB,
}


class Closed(Exception):
    """The connection ended before a complete answer; `got` answer bytes had arrived."""

    def __init__(self, what, got=0):
        super().__init__(what)
        self.got = got


class Response:
    def __init__(self, status, headers, body, early=False):
        self.status = status
        self.headers = headers
        self.body = body
        self.early = early  # answered before the whole body was sent

    def json_error(self):
        try:
            v = json.loads(self.body)
        except ValueError:
            return None
        return v.get("error") if isinstance(v, dict) and isinstance(v.get("error"), str) else None


def recv_exact_response(sock, deadline, method="POST"):
    """Reads one HTTP/1.1 response (Content-Length, chunked, or until close)."""
    buf = bytearray()

    def more():
        if time.monotonic() > deadline:
            raise socket.timeout("answer deadline")
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise Closed("connection closed after %d answer bytes" % len(buf), len(buf))
        buf.extend(chunk)

    while b"\r\n\r\n" not in buf:
        if len(buf) > 1 << 16:
            raise Closed("answer head over 64 KiB", len(buf))
        more()
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Closed("bad status line %r" % head[0], 1)
    status = int(parts[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                more()
            i = buf.index(b"\r\n")
            size = int(bytes(buf[:i]).split(b";")[0].strip() or b"0", 16)
            del buf[: i + 2]
            if size == 0:
                return Response(status, headers, bytes(body))
            while len(buf) < size + 2:
                more()
            body.extend(buf[:size])
            del buf[: size + 2]
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            more()
        return Response(status, headers, bytes(buf[:n]))
    try:
        while True:
            more()
    except Closed:
        return Response(status, headers, bytes(buf))


def request_head(method, path, host, headers, length, close=False):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    if method != "GET" or length:
        lines.append("Content-Length: %d" % length)
    if close:
        lines.append("Connection: close")
    lines += ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Client:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.retried = 0

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def connect(self):
        s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def send(self, method, path, headers, body):
        for attempt in (0, 1):
            fresh = self.sock is None
            if fresh:
                self.sock = self.connect()
            try:
                r = self._exchange(method, path, headers, body)
            except (Closed, ConnectionError) as e:
                got = getattr(e, "got", 0)
                self.close()
                if not fresh and attempt == 0 and got == 0:
                    self.retried += 1  # the server closed a kept-alive connection: retry once
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if r.early or r.headers.get("connection", "").lower() == "close":
                self.close()
            return r
        raise Closed("unreachable")

    def _exchange(self, method, path, headers, body):
        deadline = time.monotonic() + self.timeout
        s = self.sock
        host = "%s:%d" % (self.host, self.port)
        s.sendall(request_head(method, path, host, headers, len(body)))
        view = memoryview(body)
        step = 1 << 20
        for at in range(0, len(body), step):
            # A server may answer (413, 503) before it has read the whole body: stop sending then.
            if len(body) > step:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    r = recv_exact_response(s, deadline, method)
                    r.early = True
                    return r
            try:
                s.sendall(view[at : at + step])
            except (BrokenPipeError, ConnectionResetError) as e:
                # Maybe the answer arrived before the reset.
                try:
                    r = recv_exact_response(s, deadline, method)
                    r.early = True
                    return r
                except (OSError, Closed):
                    raise Closed("%s while sending the body (byte %d of %d)" % (e.__class__.__name__, at, len(body)))
        return recv_exact_response(s, deadline, method)


def simple_get(host, port, path, timeout=5.0):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(request_head("GET", path, "%s:%d" % (host, port), [], 0, close=True))
        return recv_exact_response(s, time.monotonic() + timeout, "GET")
    finally:
        s.close()


# ----------------------------------------------------------------------------------------------
# Server process


class ProcSampler(threading.Thread):
    """Samples VmRSS, threads and open fds of the server every `period` seconds."""

    def __init__(self, pid, period=1.0):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples = []  # (monotonic time, rss bytes, threads, fds)
        self.dead = False
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def sample(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                text = f.read()
        except OSError:
            self.dead = True
            return None
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith(("Z", "X")):
            self.dead = True
            return None
        rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        threads = int(fields.get("Threads", "0").strip())
        try:
            fds = len(os.listdir("/proc/%d/fd" % self.pid))
        except OSError:
            fds = -1
        s = (time.monotonic(), rss, threads, fds)
        with self.lock:
            self.samples.append(s)
        return s

    def run(self):
        while not self.halt.wait(self.period):
            if self.sample() is None:
                return

    def at(self, t):
        """The sample nearest to monotonic time t."""
        with self.lock:
            return min(self.samples, key=lambda s: abs(s[0] - t)) if self.samples else None

    def between(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] <= t1]


def mib(n):
    return "%.1f MiB" % (n / MIB)


def budgets(args, host, port):
    """The budgets the server runs with: flags given to it, its model config, else defaults."""
    found = {k: (v, "server default") for k, v in DEFAULT_BUDGETS.items()}
    try:
        cfg = json.loads(simple_get(host, port, "/v2/models/%s/config" % args.model).body)
        stack = [cfg]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                for k, x in v.items():
                    name = k.replace("_", "-")
                    if name in found and isinstance(x, int):
                        found[name] = (x, "model config")
                    elif name in found and isinstance(x, dict) and "string_value" in x:
                        try:
                            found[name] = (int(x["string_value"]), "model config")
                        except ValueError:
                            pass
                    stack.append(x)
            elif isinstance(v, list):
                stack.extend(v)
    except (OSError, ValueError, Closed):
        pass
    words = shlex.split(args.server_flags or "")
    for i, w in enumerate(words):
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            if not eq and i + 1 < len(words):
                value = words[i + 1]
            if name in found:
                try:
                    found[name] = (int(value), "flag")
                except ValueError:
                    pass
    return found


# ----------------------------------------------------------------------------------------------
# Requests


class Workload:
    def __init__(self, args, host, port):
        meta = json.loads(simple_get(host, port, "/v2/models/%s" % args.model).body)
        self.model = args.model
        self.input = meta["inputs"][0]["name"]
        self.dims = [int(d) for d in meta["inputs"][0]["shape"][1:]]
        self.classes = int(meta["outputs"][0]["shape"][1])
        self.per_image = 1
        for d in self.dims:
            self.per_image *= d
        names = sorted(n for n in os.listdir(args.samples) if n.endswith(".png"))
        if not names:
            sys.exit("no PNG in %s" % args.samples)
        self.pngs = [open(os.path.join(args.samples, n), "rb").read() for n in names]
        self.b64 = [base64.b64encode(p).decode() for p in self.pngs]
        self.classify = "/v1/models/%s/classify" % args.model
        self.infer = "/v2/models/%s/infer" % args.model
        rng = random.Random(args.seed)
        floats = [rng.uniform(-1.0, 1.0) for _ in range(8 * self.per_image)]
        data = struct.pack("<%df" % len(floats), *floats)
        self.fp32x8 = self.binary_body([8] + self.dims, "FP32", data, binary_output=True)
        # malformed
        wrong = [1] + [self.dims[0] + 2] + self.dims[1:]
        self.wrong_shape = json.dumps(
            {"inputs": [{"name": self.input, "shape": wrong, "datatype": "FP32", "data": [0.0] * self.per_image}]}
        ).encode()
        self.bad_size = self.binary_body([1] + self.dims, "FP32", data[: 4 * self.per_image], size=8 * self.per_image)

    def binary_body(self, shape, datatype, data, binary_output=False, size=None):
        header = {
            "inputs": [
                {
                    "name": self.input,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(data) if size is None else size},
                }
            ]
        }
        if binary_output:
            header["parameters"] = {"binary_data_output": True}
        h = json.dumps(header).encode()
        return (
            [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(h)))],
            h + data,
        )

    def oip_json_bytes(self, i):
        body = {"inputs": [{"name": self.input, "shape": [1], "datatype": "BYTES", "data": [self.b64[i]]}]}
        return [("Content-Type", "application/json")], json.dumps(body).encode()

    # Each returns (method, path, headers, body, check) with check(response) -> None or a complaint.

    def good(self, kind, rng):
        i = rng.randrange(len(self.pngs))
        if kind == "classify_png":

            def check(r):
                if r.status != 200:
                    return "good request answered %d: %s" % (r.status, r.body[:200])
                try:
                    results = json.loads(r.body)["results"]
                    assert len(results) == 1 and results[0]["predictions"]
                except (ValueError, KeyError, AssertionError, TypeError):
                    return "200 without results: %r" % r.body[:200]

            return self.classify, [("Content-Type", "image/png")], self.pngs[i], check
        if kind == "oip_json_bytes":
            headers, body = self.oip_json_bytes(i)

            def check(r):
                if r.status != 200:
                    return "good request answered %d: %s" % (r.status, r.body[:200])
                try:
                    out = json.loads(r.body)["outputs"][0]
                    assert out["shape"] == [1, self.classes] and len(out["data"]) == self.classes
                except (ValueError, KeyError, AssertionError, TypeError, IndexError):
                    return "200 with an unexpected body: %r" % r.body[:200]

            return self.infer, headers, body, check
        headers, body = self.fp32x8

        def check(r):
            if r.status != 200:
                return "good request answered %d: %s" % (r.status, r.body[:200])
            try:
                n = int(r.headers["inference-header-content-length"])
                out = json.loads(r.body[:n])["outputs"][0]
                assert out["shape"] == [8, self.classes] and len(r.body) - n == 8 * self.classes * 4
            except (ValueError, KeyError, AssertionError, TypeError, IndexError):
                return "200 with an unexpected binary answer: %r" % r.body[:200]

        return self.infer, headers, body, check

    def malformed(self, kind, rng):
        if kind == "bad_json":
            req = (self.infer, [("Content-Type", "application/json")], b'{"inputs": [{"name": "%s", ' % self.input.encode())
        elif kind == "wrong_shape":
            req = (self.infer, [("Content-Type", "application/json")], self.wrong_shape)
        elif kind == "undecodable_image":
            junk = bytes(rng.randrange(256) for _ in range(200))
            req = (self.classify, [("Content-Type", "image/png")], b"\x89PNG\r\n\x1a\n" + junk)
        elif kind == "wrong_content_type":
            req = (self.classify, [("Content-Type", "text/plain")], b"hello, not an image")
        else:  # bad_binary_size
            req = self.infer, self.bad_size[0], self.bad_size[1]

        def check(r):
            if not 400 <= r.status < 500:
                return "malformed request answered %d: %s" % (r.status, r.body[:200])
            if r.json_error() is None:
                return "%d without a JSON error body: %r" % (r.status, r.body[:200])

        return req + (check,)


GOOD = ["classify_png", "oip_json_bytes", "oip_binary_fp32x8"]
MALFORMED = ["bad_json", "wrong_shape", "undecodable_image", "wrong_content_type", "bad_binary_size"]
HUNG = ["hangup_partial_body", "hangup_before_answer"]
MIX = [(k, 20) for k in GOOD] + [(k, 5) for k in MALFORMED] + [(k, 7.5) for k in HUNG]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}  # kind -> {status label: n}
        self.latency = {}  # kind -> [seconds]
        self.unexpected = []  # (time, kind, what)
        self.unexpected_n = 0
        self.retried = 0

    def count(self, kind, label, seconds=None):
        with self.lock:
            d = self.counts.setdefault(kind, {})
            d[label] = d.get(label, 0) + 1
            if seconds is not None:
                self.latency.setdefault(kind, []).append(seconds)

    def fault(self, kind, what):
        with self.lock:
            self.unexpected_n += 1
            if len(self.unexpected) < 40:
                self.unexpected.append((time.strftime("%H:%M:%S"), kind, what))

    def total(self):
        with self.lock:
            return sum(sum(d.values()) for d in self.counts.values())


def hang_up(w, kind, rng, host, port, timeout):
    """A request whose client goes away: part of the body, or the whole request sent slowly and
    the answer never read. Half of the closes are resets (SO_LINGER 0)."""
    if rng.random() < 0.5:
        path, headers, body = w.classify, [("Content-Type", "image/png")], w.pngs[rng.randrange(len(w.pngs))]
    else:
        path, (headers, body) = w.infer, w.fp32x8
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request_head("POST", path, "%s:%d" % (host, port), headers, len(body)))
        if kind == "hangup_partial_body":
            s.sendall(body[: rng.randrange(1, len(body))])
            time.sleep(rng.uniform(0, 0.1))
        else:
            cuts = sorted(rng.sample(range(1, len(body)), 2))
            for a, b in zip([0] + cuts, cuts + [len(body)]):
                s.sendall(body[a:b])
                time.sleep(rng.uniform(0.01, 0.05))
        if rng.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


def soak_worker(index, args, w, stats, sampler, host, port, stop_at):
    rng = random.Random(args.seed * 1000 + index)
    kinds, weights = zip(*MIX)
    client = Client(host, port, args.timeout)
    while time.monotonic() < stop_at and not sampler.dead:
        kind = rng.choices(kinds, weights)[0]
        t = time.monotonic()
        if kind in HUNG:
            try:
                hang_up(w, kind, rng, host, port, args.timeout)
                stats.count(kind, "hung up")
            except OSError as e:
                stats.count(kind, "error")
                stats.fault(kind, "could not even send the start of the request: %r" % e)
                sampler.sample()
            continue
        path, headers, body, check = w.good(kind, rng) if kind in GOOD else w.malformed(kind, rng)
        try:
            r = client.send("POST", path, headers, body)
        except (socket.timeout, TimeoutError) as e:
            client.close()
            stats.count(kind, "timeout")
            stats.fault(kind, "no answer within %.0f s (%s)" % (args.timeout, e))
            continue
        except (Closed, OSError) as e:
            client.close()
            stats.count(kind, "reset/closed")
            stats.fault(kind, "connection failed: %r" % e)
            sampler.sample()  # notices a dead server at once
            continue
        stats.count(kind, r.status, time.monotonic() - t)
        complaint = check(r)
        if r.status >= 500:
            complaint = "%d: %s" % (r.status, r.body[:200])
        if complaint:
            stats.fault(kind, complaint)
    with stats.lock:
        stats.retried += client.retried
    client.close()


class Flood:
    """Maximal bodies, just under --max-body-bytes."""

    def __init__(self, w, max_body):
        room = max_body - 64 * 1024
        n = room // (w.per_image * 4)
        rng = random.Random(7)
        one = struct.pack("<%df" % w.per_image, *[rng.uniform(-1, 1) for _ in range(w.per_image)])
        self.fp32_images = n
        self.fp32 = w.binary_body([n] + w.dims, "FP32", one * n)
        parts, size, count = [], 0, 0
        while True:
            b = w.b64[count % len(w.b64)]
            if size + len(b) + 3 > room:
                break
            parts.append(b)
            size += len(b) + 3
            count += 1
        self.json_images = count
        self.json = ([("Content-Type", "application/json")], ('{"images": ["' + '","'.join(parts) + '"]}').encode())
        self.paths = {"flood_binary_fp32": w.infer, "flood_json_classify": w.classify}

    def pick(self, rng):
        kind = rng.choice(["flood_binary_fp32", "flood_json_classify"])
        headers, body = self.fp32 if kind == "flood_binary_fp32" else self.json
        return kind, self.paths[kind], headers, body


def flood_worker(index, args, flood, stats, sampler, host, port, stop_at):
    rng = random.Random(args.seed * 1000 + index)
    client = Client(host, port, args.timeout)
    while time.monotonic() < stop_at and not sampler.dead:
        kind, path, headers, body = flood.pick(rng)
        t = time.monotonic()
        try:
            r = client.send("POST", path, headers, body)
        except (socket.timeout, TimeoutError) as e:
            client.close()
            stats.count(kind, "timeout")
            stats.fault(kind, "no answer within %.0f s (%s)" % (args.timeout, e))
            continue
        except (Closed, OSError) as e:
            client.close()
            if "while sending the body" in str(e):
                # Refused before the body was read, and the answer was lost to the reset.
                stats.count(kind, "reset while sending")
            else:
                stats.count(kind, "reset/closed")
                stats.fault(kind, "connection failed: %r" % e)
                sampler.sample()
            continue
        label = "%d%s" % (r.status, " early" if r.early else "")
        stats.count(kind, label, time.monotonic() - t)
        if r.status not in (200, 413, 503):
            stats.fault(kind, "answered %d: %s" % (r.status, r.body[:200]))
        elif r.status == 503 and "retry-after" not in r.headers:
            stats.fault(kind, "503 without Retry-After: %s" % r.body[:200])
        elif r.status != 200 and r.json_error() is None:
            stats.fault(kind, "%d without a JSON error body: %r" % (r.status, r.body[:200]))
    with stats.lock:
        stats.retried += client.retried
    client.close()


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def print_table(stats):
    with stats.lock:
        counts = {k: dict(v) for k, v in stats.counts.items()}
        lat = {k: list(v) for k, v in stats.latency.items()}
    labels = sorted({l for d in counts.values() for l in d}, key=lambda l: (isinstance(l, str), str(l)))
    width = max([len(k) for k in counts] + [4])
    print("  %-*s %8s  %s" % (width, "kind", "sent", "  ".join("%8s" % l for l in labels)) + "   p50 / p99 ms")
    for kind in sorted(counts, key=lambda k: ([*GOOD, *MALFORMED, *HUNG, k].index(k), k)):
        d = counts[kind]
        l = lat.get(kind, [])
        timing = "   %.1f / %.1f" % (percentile(l, 0.5) * 1e3, percentile(l, 0.99) * 1e3) if l else ""
        print(
            "  %-*s %8d  %s" % (width, kind, sum(d.values()), "  ".join("%8d" % d.get(x, 0) for x in labels)) + timing
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server, http://HOST:PORT")
    p.add_argument("--pid", type=int, required=True, help="the server's process id (for /proc)")
    p.add_argument("--model", default="fashion-mnist-effnet")
    p.add_argument("--samples", default="samples/fashion-mnist", help="directory of PNG samples")
    p.add_argument("--duration", type=float, help="seconds of load (default 600; 60 with --flood)")
    p.add_argument("--clients", type=int, help="concurrent client threads (default 16; 32 with --flood)")
    p.add_argument("--timeout", type=float, help="seconds per request (default 30; 300 with --flood)")
    p.add_argument("--flood", action="store_true", help="maximal bodies instead of the soak mix")
    p.add_argument("--server-flags", default="", help="the flags the server runs with, to report its budgets")
    p.add_argument("--seed", type=int, default=19)
    args = p.parse_args()
    args.duration = args.duration or (60.0 if args.flood else 600.0)
    args.clients = args.clients or (32 if args.flood else 16)
    args.timeout = args.timeout or (300.0 if args.flood else 30.0)
    hostport = args.url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    port = int(port)

    sampler = ProcSampler(args.pid)
    if sampler.sample() is None:
        sys.exit("no process %d" % args.pid)
    w = Workload(args, host, port)
    budget = budgets(args, host, port)
    flood = Flood(w, budget["max-body-bytes"][0]) if args.flood else None
    # Settle, then the start sample: after readiness, before load.
    time.sleep(1.0)
    start = sampler.sample()
    sampler.start()
    stats = Stats()
    mode = "flood" if args.flood else "soak"
    print(
        "%s: %.0f s, %d clients, model %s (input %s %s, %d classes), server pid %d at %s"
        % (mode, args.duration, args.clients, args.model, w.input, w.dims, w.classes, args.pid, hostport)
    )
    if flood:
        print(
            "flood bodies: binary FP32 of %d images (%d bytes), JSON classify of %d base64 PNGs (%d bytes); "
            "--max-body-bytes %d" % (flood.fp32_images, len(flood.fp32[1]), flood.json_images, len(flood.json[1]),
                                      budget["max-body-bytes"][0])
        )
    print("RSS at start (after readiness, before load): %s, %d threads, %d open fds" % (mib(start[1]), start[2], start[3]))
    sys.stdout.flush()

    t0 = time.monotonic()
    stop_at = t0 + args.duration
    target = flood_worker if args.flood else soak_worker
    load = flood if args.flood else w
    threads = [
        threading.Thread(target=target, args=(i, args, load, stats, sampler, host, port, stop_at), daemon=True)
        for i in range(args.clients)
    ]
    for t in threads:
        t.start()
    every = 10.0 if args.flood else 30.0
    next_print = t0 + every
    while time.monotonic() < stop_at and not sampler.dead:
        time.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
        if time.monotonic() >= next_print:
            next_print += every
            s = sampler.at(time.monotonic())
            print(
                "  %4.0f s: %d requests, RSS %s, %d threads, %d fds, %d unexpected"
                % (time.monotonic() - t0, stats.total(), mib(s[1]) if s else "?", s[2] if s else 0,
                   s[3] if s else 0, stats.unexpected_n)
            )
            sys.stdout.flush()
    load_end = time.monotonic()
    end = sampler.sample() if not sampler.dead else None
    # In-flight requests finish (bounded by their timeout).
    for t in threads:
        t.join(timeout=max(0.0, load_end + args.timeout + 5 - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    time.sleep(2.0)
    settled = sampler.sample() if not sampler.dead else None
    sampler.halt.set()
    elapsed = load_end - t0

    total = stats.total()
    print("%s done: %d requests in %.0f s (%.1f/s); keep-alive retries %d" % (mode, total, elapsed, total / elapsed,
                                                                              stats.retried))
    print_table(stats)
    samples = sampler.between(t0, load_end + 0.5)
    peak = max(samples + [start], key=lambda s: s[1])
    print("RSS: start %s; peak %s (at %.0f s)" % (mib(start[1]), mib(peak[1]), peak[0] - t0))
    minute = sampler.at(t0 + 60.0) if elapsed >= 90 else None
    if end:
        print("RSS at the end of the load: %s, %d threads, %d open fds" % (mib(end[1]), end[2], end[3]))
    if settled:
        print("RSS 2 s after the last answer: %s, %d threads, %d open fds" % (mib(settled[1]), settled[2], settled[3]))
    if not args.flood:
        if minute and end:
            growth = (end[1] - minute[1]) / minute[1] * 100
            print(
                "RSS after 1 minute: %s; growth from then to the end: %+.2f%% (goal < 5%%: %s)"
                % (mib(minute[1]), growth, "met" if growth < 5 else "NOT met")
            )
        else:
            print("RSS after 1 minute: n/a (the load ran %.0f s; growth needs at least 90 s)" % elapsed)
    else:
        print("peak RSS %s (start %s, +%s) against the server's budgets:" % (mib(peak[1]), mib(start[1]),
                                                                            mib(peak[1] - start[1])))
        for name in ["max-body-bytes", "max-inflight-body-bytes", "max-queue-bytes", "max-queue-images"]:
            value, source = budget[name]
            shown = str(value) if name == "max-queue-images" else "%s (%d)" % (mib(value), value)
            scope = " per model version" if name.startswith("max-queue") else ""
            print("  --%s %s%s [%s]" % (name, shown, scope, source))

    try:
        live = simple_get(host, port, "/v2/health/live").status
    except (OSError, Closed) as e:
        live = "no answer (%r)" % (e,)
    print("after the load: /v2/health/live %s" % live)
    if stuck:
        stats.fault("-", "%d client threads still waiting after the load" % stuck)
    print("unexpected: %d" % stats.unexpected_n)
    for when, kind, what in stats.unexpected:
        print("  %s %s: %s" % (when, kind, what))
    if sampler.dead or live != 200:
        print("FAILED: the server died or stopped answering")
        return 2
    return 1 if stats.unexpected_n else 0


if __name__ == "__main__":
    sys.exit(main())
