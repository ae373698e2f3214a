"""PyTorch half of benches/attack_step.sh: CPU autograd on the networks the Rust half timed.

Reads the JSON lines of `attack_step` (one per model and batch: the ONNX file, input shape,
normalisation, thread count and Hardy's medians) on stdin, converts each model with
onnx2torch and times, with the same batch and thread count, a forward pass (no_grad) and
one attack step: forward with the normalisation, summed cross-entropy, and its gradient with
respect to the [0, 1] pixels only (the weights do not require gradients, as in Hardy's
graph). Medians over repeated runs after warm-up. Prints the table, and the same rows as
Markdown for benches/README.md.
"""

import json
import statistics
import sys
import time

import onnx
import torch
import torch.nn.functional as F
from onnx2torch import convert


def median_ms(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def torch_case(case, cache):
    torch.set_num_threads(case["threads"])
    path = case["onnx"]
    if path not in cache:
        model = convert(onnx.load(path)).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        cache[path] = model
    model = cache[path]
    batch = case["batch"]
    dims = case["dims"]
    channels = dims[0] if case["layout"] == "nchw" else dims[2]
    shape = [1, channels, 1, 1] if case["layout"] == "nchw" else [1, 1, 1, channels]

    def per_channel(v):
        return torch.tensor(v * channels if len(v) == 1 else v, dtype=torch.float32).reshape(shape)

    mean, std = per_channel(case["mean"]), per_channel(case["std"])
    gen = torch.Generator().manual_seed(5)
    pixels = torch.rand([batch] + dims, generator=gen)
    labels = torch.tensor([(i * 7) % case["classes"] for i in range(batch)], dtype=torch.long)
    normalised = (pixels - mean) / std

    def forward():
        with torch.no_grad():
            model(normalised)

    def step():
        x = pixels.clone().requires_grad_(True)
        logits = model((x - mean) / std)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        return g

    reps = case["reps"]
    fwd, stp = [], []
    for _ in range(3):
        forward()
        step()
    for _ in range(reps):
        t = time.perf_counter()
        forward()
        fwd.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        step()
        stp.append((time.perf_counter() - t) * 1e3)
    return statistics.median(fwd), statistics.median(stp)


def main():
    cases = [json.loads(line) for line in sys.stdin if line.strip().startswith("{")]
    cache = {}
    rows = []
    print(f"PyTorch {torch.__version__}, onnx2torch, CPU")
    header = (
        f"{'model':<27} {'batch':>5} {'ORT fwd':>9} {'Hardy step':>10} {'step/fwd':>8}"
        f" {'torch fwd':>9} {'torch step':>10} {'t step/fwd':>10} {'Hardy/torch':>11}"
    )
    print("(ms per image; step = forward + backward of the summed cross-entropy to the pixels)")
    print(header)
    for case in cases:
        tf, ts = torch_case(case, cache)
        b = case["batch"]
        hf, hs = case["forward_ms"] / b, case["step_ms"] / b
        tf, ts = tf / b, ts / b
        row = dict(model=case["model"], batch=b, ort_fwd=hf, hardy_step=hs, torch_fwd=tf, torch_step=ts)
        rows.append(row)
        print(
            f"{case['model']:<27} {b:>5} {hf:>9.3f} {hs:>10.3f} {hs / hf:>8.2f}"
            f" {tf:>9.3f} {ts:>10.3f} {ts / tf:>10.2f} {hs / ts:>11.2f}",
            flush=True,
        )
    print()
    print(
        "| model | batch | ORT forward ms/img | Hardy step ms/img | step/forward "
        "| torch forward ms/img | torch autograd ms/img | Hardy/torch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['batch']} | {r['ort_fwd']:.3f} | {r['hardy_step']:.3f} "
            f"| {r['hardy_step'] / r['ort_fwd']:.2f} | {r['torch_fwd']:.3f} | {r['torch_step']:.3f} "
            f"| {r['hardy_step'] / r['torch_step']:.2f} |"
        )


if __name__ == "__main__":
    main()
