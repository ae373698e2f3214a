"""The helpers benches/peers.sh calls (run with the peers environment's Python):

  free-port                       a free loopback TCP port
  bodies ...                      the request bodies of one model, and its reference top-1
  check ...                       one request as wrk sends it; prints the answer's top-1
  tree --pid P                    CPU ticks and RSS of P's process tree, now (JSON)
  idle-rate --pid P               cores P's process tree uses when no request is in flight
  wait-idle --pid P               wait until it is back at that rate (+ 10% of a core)
  sample --pid P --out F          every 100 ms: "monotonic_s cpu_ticks rss_bytes" of the tree
  measure ...                     one wrk result + the samples -> one JSON result line
  report ...                      all result lines -> markdown tables and target/bench-peers.json

A process tree is the process and all its descendants (found through /proc/*/stat's parent
field); its CPU is utime + stime of every process (all threads) plus cutime + cstime (children
that exited and were reaped), its RSS the sum of VmRSS (statm's resident pages), so pages
shared between processes count once per process.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- process trees


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # the command name may hold spaces and parentheses: split after the last ')'
    return s[s.rindex(")") + 2:].split()


def descendants(root):
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(_stat(entry)[1])
            except (OSError, ValueError, IndexError):
                pass
    if root not in parent:
        return []
    children = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_usage(root):
    """(cpu ticks, rss bytes, processes) of root's tree; (None, None, 0) once it is gone."""
    ticks = rss = 0
    pids = descendants(root)
    alive = 0
    for pid in pids:
        try:
            f = _stat(pid)
            with open(f"/proc/{pid}/statm") as s:
                resident = int(s.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # fields after the name: state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        rss += resident * PAGE
        alive += 1
    if not alive:
        return None, None, 0
    return ticks, rss, alive


def cmd_tree(args):
    ticks, rss, n = tree_usage(args.pid)
    print(json.dumps({"cpu_ticks": ticks, "rss_bytes": rss, "processes": n, "tick_hz": TICK}))


def cpu_rate(pid, seconds):
    """Cores the tree used over the next `seconds` (None once it is gone)."""
    a, _, _ = tree_usage(pid)
    time.sleep(seconds)
    b, _, _ = tree_usage(pid)
    return None if a is None or b is None else (b - a) / TICK / seconds


def cmd_idle_rate(args):
    """What the tree uses with no request in flight (LitServe's inference worker polls its
    queue, for one): the baseline of wait-idle."""
    print(f"{cpu_rate(args.pid, args.seconds):.3f}")


def cmd_wait_idle(args):
    """Idle: at most `baseline` + 0.1 cores over 0.5 s, 3 times in a row."""
    deadline = time.monotonic() + args.timeout
    quiet = 0
    while time.monotonic() < deadline:
        rate = cpu_rate(args.pid, 0.5)
        if rate is None:
            return
        quiet = quiet + 1 if rate <= args.baseline + 0.1 else 0
        if quiet >= 3:
            return
    print(f"peers: pid {args.pid} still busy after {args.timeout:.0f} s (over {args.baseline:.2f} + 0.1 cores);"
          " measuring anyway", file=sys.stderr)


def cmd_sample(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(args.out, "w") as out:
        next_t = time.monotonic()
        while not stop:
            t = time.monotonic()
            ticks, rss, n = tree_usage(args.pid)
            if n == 0:
                break
            out.write(f"{t:.6f} {ticks} {rss}\n")
            out.flush()
            next_t += args.interval
            time.sleep(max(0.0, next_t - time.monotonic()))


# ---------------------------------------------------------------- requests and answers


def cmd_free_port(_args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_bodies(args):
    """raw image, multipart form, OIP v2 binary request (JSON header + FP32 tensor of the
    image as Hardy preprocesses it), and the top-1 of running that tensor here."""
    import common
    import numpy as np

    model = common.Classifier(args.model_dir, 1)
    with open(args.image, "rb") as f:
        image = f.read()
    os.makedirs(args.out_dir, exist_ok=True)
    ext = os.path.splitext(args.image)[1].lower()
    ctype = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(ext, "application/octet-stream")
    with open(os.path.join(args.out_dir, "image"), "wb") as f:
        f.write(image)
    boundary = "hardy-peers-7d1c5a0b9e"
    form = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{os.path.basename(args.image)}\"\r\n"
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    with open(os.path.join(args.out_dir, "multipart"), "wb") as f:
        f.write(form)
    x = model.config.preprocess(image)[None]
    header = json.dumps({
        "inputs": [{"name": model.config.input_name, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }, separators=(",", ":")).encode()
    with open(os.path.join(args.out_dir, "v2"), "wb") as f:
        f.write(header + x.astype("<f4").tobytes())
    top = model.config.top_k(model.run(x)[0], 1)[0]
    info = {
        "image": args.image, "image_bytes": len(image), "content_type": ctype,
        "multipart_boundary": boundary, "v2_header_bytes": len(header), "v2_bytes": len(header) + x.nbytes,
        "tensor_shape": list(x.shape), "preprocess": model.config.describe(),
        "reference_top1": top, "model_file": model.path,
    }
    with open(os.path.join(args.out_dir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


def cmd_check(args):
    """One request as wrk will send it; prints {"status", "index", "score"} of the top-1."""
    import http.client
    from urllib.parse import urlsplit
    import numpy as np

    url = urlsplit(args.url)
    with open(args.body, "rb") as f:
        body = f.read()
    headers = dict(h.split(": ", 1) for h in args.header)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    conn.request("POST", url.path, body, headers)
    r = conn.getresponse()
    data = r.read()
    out = {"status": r.status}
    if r.status != 200:
        out["error"] = data[:300].decode(errors="replace")
    elif args.kind == "v2":
        n = int(r.getheader("Inference-Header-Content-Length"))
        head = json.loads(data[:n])
        logits = np.frombuffer(data[n:], dtype="<f4").astype(np.float64)
        e = np.exp(logits - logits.max())
        out.update(index=int(logits.argmax()), score=float(e.max() / e.sum()), outputs=head["outputs"])
    else:
        answer = json.loads(data)
        preds = answer["results"][0]["predictions"] if "results" in answer else answer["predictions"]
        out.update(index=preds[0]["index"], score=preds[0]["score"], label=preds[0].get("label"),
                   top_k=len(preds))
    print(json.dumps(out))


# ---------------------------------------------------------------- figures


def read_samples(path):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 3:
                rows.append((float(p[0]), int(p[1]), int(p[2])))
    return rows


def ticks_at(rows, t):
    """CPU ticks of the tree at time t, interpolated between the samples around it."""
    if not rows:
        return None
    if t <= rows[0][0]:
        return rows[0][1]
    for (t0, c0, _), (t1, c1, _) in zip(rows, rows[1:]):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
    return rows[-1][1]


def cmd_measure(args):
    wrk = None
    with open(args.wrk) as f:
        for line in f:
            if line.startswith("PEERS_RESULT "):
                wrk = json.loads(line[len("PEERS_RESULT "):])
    if wrk is None:
        sys.exit(f"peers: no PEERS_RESULT line in {args.wrk}")
    rows = read_samples(args.samples)
    t0, t1 = wrk["window_start"], wrk["window_end"]
    c0, c1 = ticks_at(rows, t0), ticks_at(rows, t1)
    counted = wrk["window_responses"]
    cpu_ms = (c1 - c0) / TICK * 1000.0 / counted if counted and c0 is not None else None
    during = [r[2] for r in rows if wrk["run_start"] <= r[0] <= wrk["run_end"]]
    result = {
        "model": args.model, "system": args.system, "rep": args.rep, "concurrency": args.c,
        "req_per_s": wrk["window_rate"], "p50_ms": wrk["p50_us"] / 1000.0, "p99_ms": wrk["p99_us"] / 1000.0,
        "cpu_ms_per_req": cpu_ms, "cpu_cores_busy": (c1 - c0) / TICK / (t1 - t0) if t1 > t0 else None,
        "rss_peak_mb": max(during) / 2**20 if during else None,
        "requests": wrk["requests"], "window_s": t1 - t0, "window_responses": counted,
        "wrk_req_per_s": wrk["requests"] / (wrk["duration_us"] / 1e6),
        "errors": wrk["errors"], "bad_status": wrk["bad_status"],
    }
    if args.stats_before and args.stats_after:
        result["hardy_ms"] = hardy_account(args.stats_before, args.stats_after)
    print(json.dumps(result))


def hardy_account(before, after):
    """Hardy's own account of the run's requests, from its statistics extension (Triton's
    names, serve/src/stats.rs): per successful request, the mean milliseconds of `compute_input`
    (parsing, decoding, preprocessing), `queue`, `compute_infer` (the session run that carried
    it) and `compute_output` (building the answer); `batch` is images per session run."""
    def load(path):
        with open(path) as f:
            return json.load(f)["model_stats"][0]
    a, b = load(before), load(after)
    ok = b["inference_stats"]["success"]["count"] - a["inference_stats"]["success"]["count"]
    if ok <= 0:
        return None
    out = {"requests": ok}
    for part in ("compute_input", "queue", "compute_infer", "compute_output"):
        ns = b["inference_stats"][part]["ns"] - a["inference_stats"][part]["ns"]
        out[part] = ns / ok / 1e6
    runs = b["execution_count"] - a["execution_count"]
    out["batch"] = (b["inference_count"] - a["inference_count"]) / runs if runs else None
    return out


def cmd_summary(args):
    with open(args.result) as f:
        r = json.load(f)
    print(f"{fmt(r['req_per_s'])} req/s, p50 {fmt(r['p50_ms'], 2)} ms, p99 {fmt(r['p99_ms'], 2)} ms, "
          f"CPU {fmt(r['cpu_ms_per_req'], 2)} ms/req ({fmt(r['cpu_cores_busy'], 2)} cores busy), "
          f"RSS peak {fmt(r['rss_peak_mb'], 0)} MB, {r['requests']} requests")


def fmt(x, digits=1):
    if x is None:
        return "-"
    if digits == 0 or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def mean_account(accounts):
    accounts = [a for a in accounts if a]
    if not accounts:
        return None
    keys = [k for k in accounts[0] if all(a.get(k) is not None for a in accounts)]
    return {k: statistics.fmean(a[k] for a in accounts) for k in keys}


def cmd_report(args):
    meas, servers, checks = [], [], []
    with open(args.results) as f:
        for line in f:
            r = json.loads(line)
            {"measure": meas, "server": servers, "check": checks}[r.pop("type")].append(r)
    with open(args.meta) as f:
        meta = json.load(f)
    conc = [int(c) for c in meta["concurrency"]]
    reference_of = meta["reference"]  # system -> the Hardy system it is compared with
    out = {"meta": meta, "models": {}}
    md = []
    for model in meta["models"]:
        systems = [s for s in meta["systems"] if any(m["model"] == model and m["system"] == s for m in meas)]
        figures = {}
        for s in systems:
            per_c = {}
            for c in conc:
                reps = [m for m in meas if m["model"] == model and m["system"] == s and m["concurrency"] == c]
                if not reps:
                    continue

                def mean(key, reps=reps):
                    vals = [r[key] for r in reps if r[key] is not None]
                    return statistics.fmean(vals) if vals else None

                per_c[str(c)] = {
                    "req_per_s": mean("req_per_s"), "p50_ms": mean("p50_ms"), "p99_ms": mean("p99_ms"),
                    "cpu_ms_per_req": mean("cpu_ms_per_req"), "cpu_cores_busy": mean("cpu_cores_busy"),
                    "rss_peak_mb": max((r["rss_peak_mb"] for r in reps if r["rss_peak_mb"]), default=None),
                    "hardy_ms": mean_account([r.get("hardy_ms") for r in reps]),
                    "reps": reps,
                }
            srv = [r for r in servers if r["model"] == model and r["system"] == s]
            chk = [r for r in checks if r["model"] == model and r["system"] == s]
            figures[s] = {
                "concurrency": per_c,
                "rss_idle_mb": statistics.fmean([r["rss_idle_mb"] for r in srv]) if srv else None,
                "rss_peak_mb": max((r["rss_peak_mb"] for r in srv if r["rss_peak_mb"]), default=None),
                "rss_end_mb": statistics.fmean([r["rss_end_mb"] for r in srv]) if srv else None,
                "processes": max((r["processes"] for r in srv), default=None),
                "idle_cpu_cores": statistics.fmean([r["idle_cpu_cores"] for r in srv]) if srv else None,
                "top1": chk[0] if chk else None,
                "servers": srv,
            }
        for s in systems:
            ref = reference_of.get(s)
            ratios = {}
            if ref and ref != s and ref in figures:
                for c in conc:
                    a = figures[ref]["concurrency"].get(str(c), {}).get("req_per_s")
                    b = figures[s]["concurrency"].get(str(c), {}).get("req_per_s")
                    ratios[str(c)] = a / b if a and b else None
            figures[s]["hardy_over_this"] = {"against": ref if ratios else None, "req_per_s": ratios}
        out["models"][model] = {"bodies": meta["bodies"].get(model), "systems": figures}

        cs = "/".join(str(c) for c in conc)
        md.append(f"### {model}\n")
        head = ["system"] + [f"req/s c={c}" for c in conc] + [f"p50 / p99 ms c={c}" for c in conc]
        head += [f"CPU ms/req c={cs}", "RSS idle / peak MB (peak / idle)", f"Hardy / this, req/s c={cs}", "top-1"]
        md.append("| " + " | ".join(head) + " |")
        md.append("|" + "---|" * len(head))
        for s in systems:
            f = figures[s]
            pc = f["concurrency"]
            row = [meta["labels"].get(s, s)]
            row += [fmt(pc.get(str(c), {}).get("req_per_s")) for c in conc]
            row += [f"{fmt(pc.get(str(c), {}).get('p50_ms'), 2)} / {fmt(pc.get(str(c), {}).get('p99_ms'), 2)}"
                    for c in conc]
            row.append(" / ".join(fmt(pc.get(str(c), {}).get("cpu_ms_per_req"), 2) for c in conc))
            ratio = f["rss_peak_mb"] / f["rss_idle_mb"] if f["rss_peak_mb"] and f["rss_idle_mb"] else None
            row.append(f"{fmt(f['rss_idle_mb'], 0)} / {fmt(f['rss_peak_mb'], 0)} ({fmt(ratio, 2)}x)")
            r = f["hardy_over_this"]
            if r["against"]:
                row.append(" / ".join(fmt(r["req_per_s"].get(str(c)), 2) for c in conc)
                           + f" (vs {r['against']})")
            else:
                row.append("")
            t = f["top1"]
            row.append(f"{t['index']} ({t['score']:.3f})" if t and "index" in t else "-")
            md.append("| " + " | ".join(row) + " |")
        md.append("")
        for s in systems:
            for c in conc:
                pc = figures[s]["concurrency"].get(str(c), {})
                a = pc.get("hardy_ms")
                if not a:
                    continue
                inside = sum(a[k] for k in ("compute_input", "queue", "compute_infer", "compute_output"))
                md.append(f"- {meta['labels'].get(s, s)}, c={c}: p50 {fmt(pc['p50_ms'], 2)} ms; inside the "
                          f"server per request {fmt(inside, 2)} ms = input {fmt(a['compute_input'], 2)} + queue "
                          f"{fmt(a['queue'], 2)} + inference {fmt(a['compute_infer'], 2)} + output "
                          f"{fmt(a['compute_output'], 2)}; {fmt(a['batch'], 1)} images per session run")
        md.append("")
    text = "\n".join(md)
    print(text)
    out["markdown"] = text
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port")
    b = sub.add_parser("bodies")
    b.add_argument("--model-dir", required=True)
    b.add_argument("--image", required=True)
    b.add_argument("--out-dir", required=True)
    c = sub.add_parser("check")
    c.add_argument("--url", required=True)
    c.add_argument("--body", required=True)
    c.add_argument("--header", action="append", default=[])
    c.add_argument("--kind", choices=["json", "v2"], required=True)
    t = sub.add_parser("tree")
    t.add_argument("--pid", type=int, required=True)
    w = sub.add_parser("wait-idle")
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--timeout", type=float, default=30)
    w.add_argument("--baseline", type=float, default=0.0, help="the idle rate, cores")
    ir = sub.add_parser("idle-rate")
    ir.add_argument("--pid", type=int, required=True)
    ir.add_argument("--seconds", type=float, default=2.0)
    s = sub.add_parser("sample")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--interval", type=float, default=0.1)
    m = sub.add_parser("measure")
    for a in ("--wrk", "--samples", "--model", "--system"):
        m.add_argument(a, required=True)
    m.add_argument("--rep", type=int, required=True)
    m.add_argument("--stats-before", help="Hardy's /v2/models/{m}/stats before the run")
    m.add_argument("--stats-after", help="... and after it")
    m.add_argument("--c", type=int, required=True)
    sm = sub.add_parser("summary")
    sm.add_argument("--result", required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--meta", required=True)
    r.add_argument("--json", required=True)
    args = p.parse_args()
    {
        "free-port": cmd_free_port, "bodies": cmd_bodies, "check": cmd_check, "tree": cmd_tree,
        "wait-idle": cmd_wait_idle, "idle-rate": cmd_idle_rate, "sample": cmd_sample, "measure": cmd_measure, "summary": cmd_summary,
        "report": cmd_report,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
