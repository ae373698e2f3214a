"""Collects the distillation experiment's figures into Markdown tables (used by run.sh).

Usage: python3 table.py OUT REPO   (OUT as given to run.sh; REPO the repository root)

Top-1 error is on all 10,000 Fashion-MNIST test images: the last epoch's evaluation of the
run (burn, EMA weights), or `training.json` of a shipped teacher. Corruption error is the mean
top-1 error over the 15 benchmark corruptions x 5 severities of Fashion-MNIST-C, from
`hardy eval` (ONNX Runtime) on the first LIMIT test images.
"""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
repo = Path(sys.argv[2])

ROWS = {
    "effnet-ns-3": "teacher 1: Noisy Student EfficientNet, depth 1.5 (`fashion-mnist-effnet/3`)",
    "effnet-ns-1": "teacher 2: Noisy Student EfficientNet, depth 1.0 (`fashion-mnist-effnet/1`)",
    "student": "student on labels, 8 epochs",
    "control": "student + 8 more epochs on labels",
    "meal": "student + 8 epochs of MEAL V2 from both teachers",
    "meal-no-disc": "the same without the discriminator",
    "meal-unlabelled": "student + MEAL V2 on labelled + unlabelled images, same steps as the control",
    "meal-no-disc-unlabelled": "the same without the discriminator",
    "control-2x": "student + 16 more epochs on labels (twice the compute)",
    "meal-unlabelled-2x": "student + MEAL V2 on labelled + unlabelled images, same steps as the line above",
}
ABLATION = {
    "student": "ResNet-D student (label smoothing 0.1, zero-gamma)",
    "sk": "+ selective kernel",
    "anti-alias": "+ anti-aliased downsampling",
    "big-little": "+ Big-Little (alpha 2, beta 2)",
    "dropblock": "+ DropBlock (0.1, 3x3, last 2 stages, fixed rate)",
    "no-zero-gamma": "- zero-gamma",
    "no-label-smoothing": "- label smoothing",
    "mixup": "+ mixup (alpha 0.2)",
    "autoaugment": "+ AutoAugment (ImageNet policy)",
    "kd": "+ KD from teacher 1 (T 1, label weight 0.5)",
    "all": "+ all of the above",
}
SHIPPED = {"effnet-ns-3": "models/fashion-mnist-effnet/3", "effnet-ns-1": "models/fashion-mnist-effnet/1"}


def figures(name):
    """(top-1 error %, corruption error % or None, images in the corruption eval, minutes)."""
    clean, minutes = None, None
    csv = out / name / "metrics.csv"
    if csv.is_file():
        rows = [l.split(",") for l in csv.read_text().splitlines()[1:]]
        if rows:
            clean = (1 - float(rows[-1][3])) * 100
            minutes = sum(float(r[4]) for r in rows) / 60
    elif name in SHIPPED:
        record = json.loads((repo / SHIPPED[name] / "training.json").read_text())
        clean = (1 - record["test_top1"]) * 100
    if clean is None:
        return None
    ce, images = None, 0
    result = out / "eval" / name / "result.json"
    if result.is_file():
        r = json.loads(result.read_text())
        ce = r["corruptions"]["mean_error"] * 100
        images = r["clean"]["images"]
    return clean, ce, images, minutes


def table(rows, base=None):
    print("| model | top-1 error % | corruption error % | training minutes |")
    print("|---|---|---|---|")
    ref = figures(base) if base else None
    for name, label in rows.items():
        f = figures(name)
        if f is None:
            print(f"| {label} | (not run) | | |")
            continue
        clean, ce, _, minutes = f
        epochs = len((out / name / "metrics.csv").read_text().splitlines()) - 1 if (out / name / "metrics.csv").is_file() else 0
        unfinished = name not in SHIPPED and not (out / name / "done").is_file()
        if unfinished:
            label = f"{label} (unfinished: {epochs} of its epochs)"
        dc = dce = ""
        if ref and name != base:
            dc = f" ({clean - ref[0]:+.2f})"
            if ce is not None and ref[1] is not None:
                dce = f" ({ce - ref[1]:+.2f})"
        ce_s = f"{ce:.2f}{dce}" if ce is not None else "-"
        m = f"{minutes:.1f}" if minutes is not None else "-"
        print(f"| {label} | {clean:.2f}{dc} | {ce_s} | {m} |")


images = max((figures(n) or (0, 0, 0, 0))[2] for n in list(ROWS) + list(ABLATION))
print("Top-1 error: all 10,000 Fashion-MNIST test images. Corruption error: mean top-1 error over")
print(f"the 15 benchmark corruptions x 5 severities of Fashion-MNIST-C, first {images} test images.\n")
table(ROWS)
print()
table(ABLATION, base="student")
