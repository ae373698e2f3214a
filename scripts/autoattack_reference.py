#!/usr/bin/env python3
"""Independent AutoAttack ("standard" version) on an ONNX classifier, for Hardy's parity tests.

Hardy runs AutoAttack on the ONNX file itself (eval/src/autoattack). This script runs the same
sequence with PyPI torchattacks' implementations on the same file converted to PyTorch with
onnx2torch, so a test can compare robust accuracy after each attack.

Usage (the environment comes from scripts/torch-env.sh):

    PYTHONPATH=$(scripts/torch-env.sh) python3 scripts/autoattack_reference.py \
        MODEL.onnx PIXELS.f32 [SIDECAR.json] [--out RESULT.json]

PIXELS.f32 holds N images as little-endian float32 in [0, 1], in the layout the sidecar names
(`nchw`, the default, or `nhwc`: the layout the ONNX model takes). SIDECAR.json (default:
PIXELS.f32 with `.json` appended) holds:

    {"n": 100, "c": 1, "h": 28, "w": 28, "labels": [...n ints...],
     "mean": [0.286], "std": [0.353], "eps": 0.0313725, "norm": "Linf", "seed": 0,
     "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "batch_size": 100,
     // optional:
     "layout": "nchw", "n_classes": 10, "threads": 2, "adv_out": "adv.f32",
     "steps": 100, "n_queries": 5000, "n_target_classes": 9}

The model computed is `logits = onnx_model((x - mean) / std)` on [0, 1] pixels. Each attack
runs only on the points still robust after the previous ones (robust = clean-correct and not
yet fooled), in batches of batch_size, with torch's RNG seeded by `seed` at the start of each
attack's batch as the reference does. The attacks are configured as the reference
`autoattack` package's "standard" version (fra31/auto-attack, autoattack.py), which is NOT
what torchattacks' own `AutoAttack(version="standard")` does; the differences, each overridden
here:
  - torchattacks' AutoAttack leaves APGD, APGD-T and FAB at their default steps=10; the
    reference runs 100 iterations.
  - torchattacks sets APGD-T's and FAB's target count to n_classes - 1; the reference uses 9
    (min(9, K-1) here; for 1000-class models torchattacks would try 999 targets).
  - torchattacks' Square defaults to resc_schedule=True (p schedule stretched to 10,000
    queries when n_queries=5000); the reference AutoAttack passes resc_schedule=False.
  - torchattacks' MultiAttack hands every point (even clean-misclassified ones) to the first
    attack and seeds with time.time() when seed=None; here only robust points, seed fixed.
An adversarial example counts only when it is misclassified, within eps (+1e-5) of the clean
image in the attack's norm, and inside [0, 1]; violations are counted in the output.

Prints one JSON object (also written to --out): n, clean_accuracy, robust_accuracy and
robust_count (after each attack, cumulative), robust (per-sample 0/1 flags: "clean" then one
list per attack), clean_predictions and clean_logits (to check the onnx2torch conversion
against ONNX Runtime), seconds per attack, the violations, and the versions of torch,
torchattacks, onnx2torch, onnx. torch reports "2.9.0+cu128": PyPI's build, run on the CPU.
"""

import argparse
import json
import os
import sys
import time

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="ONNX classifier")
    parser.add_argument("pixels", help="little-endian float32 pixels in [0, 1]")
    parser.add_argument("sidecar", nargs="?", help="JSON parameters (default: PIXELS.json)")
    parser.add_argument("--out", help="also write the result JSON here")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    parser.add_argument("--progress", help="per-batch log (JSON lines): finished batches are "
                        "appended and, when the script is rerun with the same log, replayed "
                        "instead of attacked again")
    return parser.parse_args(argv)


def load_inputs(args):
    import numpy as np

    sidecar = args.sidecar or args.pixels + ".json"
    with open(sidecar) as f:
        spec = json.load(f)
    for key in ("n", "c", "h", "w", "labels", "mean", "std", "eps"):
        if key not in spec:
            raise SystemExit(f"{sidecar}: missing key {key!r}")
    n, c, h, w = (int(spec[k]) for k in ("n", "c", "h", "w"))
    layout = spec.get("layout", "nchw").lower()
    if layout not in ("nchw", "nhwc"):
        raise SystemExit(f"{sidecar}: layout must be nchw or nhwc, not {layout!r}")
    raw = np.fromfile(args.pixels, dtype="<f4")
    if raw.size != n * c * h * w:
        raise SystemExit(f"{args.pixels}: {raw.size} floats, expected n*c*h*w = {n * c * h * w}")
    pixels = raw.reshape(n, c, h, w) if layout == "nchw" else raw.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    labels = np.asarray(spec["labels"], dtype=np.int64)
    if labels.shape != (n,):
        raise SystemExit(f"{sidecar}: {labels.size} labels for n = {n}")
    mean, std = (np.asarray(spec[k], dtype=np.float32).reshape(-1) for k in ("mean", "std"))
    if mean.size not in (1, c) or std.size not in (1, c):
        raise SystemExit(f"{sidecar}: mean/std need 1 or c = {c} values")
    attacks = spec.get("attacks", list(ATTACKS))
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"{sidecar}: unknown attacks {unknown}; known: {list(ATTACKS)}")
    norm = spec.get("norm", "Linf")
    if norm not in ("Linf", "L2"):
        raise SystemExit(f"{sidecar}: norm must be Linf or L2, not {norm!r}")
    return spec, np.ascontiguousarray(pixels), labels, mean, std, layout, attacks, norm


def build_model(path, mean, std, layout):
    import onnx
    import torch
    from onnx2torch import convert

    class Normalised(torch.nn.Module):
        """logits = onnx_model((x - mean) / std), x NCHW in [0, 1]; NHWC models get a permute."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.from_numpy(mean).reshape(1, -1, 1, 1))
            self.register_buffer("std", torch.from_numpy(std).reshape(1, -1, 1, 1))
            self.nhwc = layout == "nhwc"

        def forward(self, x):
            z = (x - self.mean) / self.std
            if self.nhwc:
                z = z.permute(0, 2, 3, 1)
            return self.net(z)

    net = convert(onnx.load(path))
    model = Normalised(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_attack(name, model, norm, eps, seed, n_classes, spec):
    import torchattacks

    steps = int(spec.get("steps", 100))
    n_targets = int(spec.get("n_target_classes", min(9, n_classes - 1)))
    if name == "apgd-ce":
        atk = torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed,
                                loss="ce", eot_iter=1, rho=0.75)
    elif name == "apgd-t":
        atk = torchattacks.APGDT(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed,
                                 eot_iter=1, rho=0.75, n_classes=n_classes)
        atk.n_target_classes = n_targets
    elif name == "fab-t":
        atk = torchattacks.FAB(model, norm=norm, eps=eps, steps=steps, n_restarts=1, alpha_max=0.1,
                               eta=1.05, beta=0.9, seed=seed, multi_targeted=True, n_classes=n_classes)
        atk.n_target_classes = n_targets
    else:
        atk = torchattacks.Square(model, norm=norm, eps=eps, n_queries=int(spec.get("n_queries", 5000)),
                                  n_restarts=1, p_init=0.8, loss="margin", resc_schedule=False, seed=seed)
    return atk


def main(argv):
    args = parse_args(argv)
    spec, pixels, labels, mean, std, layout, attacks, norm = load_inputs(args)

    from importlib.metadata import version as package_version

    import numpy as np
    import onnx
    import torch
    import torchattacks

    torch.set_num_threads(int(spec.get("threads", 2)))
    eps = float(spec["eps"])
    seed = int(spec.get("seed", 0))
    batch = max(1, int(spec.get("batch_size", 100)))
    model = build_model(args.model, mean, std, layout)

    x_all = torch.from_numpy(pixels)
    y_all = torch.from_numpy(labels)
    n = x_all.shape[0]
    started = time.perf_counter()

    with torch.no_grad():
        logits = torch.cat([model(x_all[i:i + batch]) for i in range(0, n, batch)])
    n_classes = int(spec.get("n_classes", logits.shape[1]))
    if n_classes < 2:
        raise SystemExit(f"the model has {n_classes} outputs; need at least 2 classes")
    robust = (logits.argmax(1) == y_all).clone()
    adversarial = x_all.clone()
    result = {
        "n": n,
        "eps": eps,
        "norm": norm,
        "seed": seed,
        "batch_size": batch,
        "n_classes": n_classes,
        "attacks": attacks,
        "clean_accuracy": robust.float().mean().item(),
        "robust_accuracy": {},
        "robust_count": {"clean": int(robust.sum())},
        "robust": {"clean": robust.int().tolist()},
        # For checking the conversion against Hardy's ONNX Runtime run of the same file.
        "clean_predictions": logits.argmax(1).tolist(),
        "clean_logits": [[round(v, 6) for v in row] for row in logits.tolist()],
        "seconds": {},
        "violations": {},
        "outputs_look_like_probabilities": bool(
            ((logits >= 0) & (logits <= 1)).all() and torch.allclose(logits.sum(1), torch.ones(n), atol=1e-3)
        ),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "onnx2torch": package_version("onnx2torch"),
            "onnx": onnx.__version__,
            "numpy": np.__version__,
        },
    }

    # Each batch is seeded on its own, so a batch replayed from the log gives exactly what
    # attacking it again would. The log is keyed by attack and first index, and checked
    # against the batch's indices, so a log from other inputs or parameters is refused.
    done = {}
    if args.progress:
        if spec.get("adv_out"):
            raise SystemExit("--progress cannot be combined with adv_out (replayed batches keep no images)")
        if os.path.exists(args.progress):
            with open(args.progress, "rb") as f:
                text = f.read()
            # A torn last line (killed mid-write) is cut off; that batch runs again.
            text = text[:text.rfind(b"\n") + 1]
            with open(args.progress, "wb") as f:
                f.write(text)
            for line in text.decode().splitlines():
                entry = json.loads(line)
                done[(entry["attack"], entry["start"])] = entry
        log = open(args.progress, "a")

    for name in attacks:
        t0 = time.perf_counter()
        todo = robust.nonzero().flatten()
        bad = 0
        for start in range(0, todo.numel(), batch):
            idx = todo[start:start + batch]
            entry = done.get((name, start))
            if entry is not None:
                if entry["indices"] != idx.tolist():
                    raise SystemExit(f"{args.progress}: {name} batch at {start} holds other images; "
                                     "remove the log to start afresh")
                robust[torch.tensor(entry["fooled"], dtype=torch.long)] = False
                bad += entry["violations"]
                continue
            x, y = x_all[idx], y_all[idx]
            atk = make_attack(name, model, norm, eps, seed, n_classes, spec)
            adv = atk(x, y).detach()
            with torch.no_grad():
                fooled = model(adv).argmax(1) != y
            delta = (adv - x).reshape(len(idx), -1)
            size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
            valid = (size <= eps + 1e-5) & (adv >= 0).reshape(len(idx), -1).all(1) & (adv <= 1).reshape(len(idx), -1).all(1)
            batch_bad = int((fooled & ~valid).sum())
            bad += batch_bad
            fooled &= valid
            robust[idx[fooled]] = False
            adversarial[idx[fooled]] = adv[fooled]
            if args.progress:
                log.write(json.dumps({"attack": name, "start": start, "indices": idx.tolist(),
                                      "fooled": idx[fooled].tolist(), "violations": batch_bad}) + "\n")
                log.flush()
                os.fsync(log.fileno())
        result["seconds"][name] = round(time.perf_counter() - t0, 3)
        result["violations"][name] = bad
        result["robust_accuracy"][name] = robust.float().mean().item()
        result["robust_count"][name] = int(robust.sum())
        result["robust"][name] = robust.int().tolist()
        if args.verbose:
            print(f"{name}: robust accuracy {robust.float().mean().item():.4f} "
                  f"({result['seconds'][name]:.1f} s)", file=sys.stderr)

    result["robust_accuracy_final"] = robust.float().mean().item()
    result["seconds_total"] = round(time.perf_counter() - started, 3)
    if spec.get("adv_out"):
        out = adversarial.numpy() if layout == "nchw" else adversarial.permute(0, 2, 3, 1).numpy()
        np.ascontiguousarray(out, dtype="<f4").tofile(spec["adv_out"])
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
