"""Collects the distillation experiment's figures into Markdown tables (used by run.sh).

Usage: python3 table.py OUT   (OUT as given to run.sh)
"""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])

ROWS = {
    "effnet-ns-3": "teacher 1: Noisy Student EfficientNet, depth 1.5, 8 passes (fashion-mnist-effnet/3)",
    "effnet-ns-1": "teacher 2: Noisy Student EfficientNet, depth 1.0 (fashion-mnist-effnet/1)",
    "student": "student on labels, 8 epochs",
    "control": "student + 8 more epochs on labels",
    "meal": "student + 8 epochs of MEAL V2 from both teachers",
    "meal-no-disc": "the same without the discriminator",
    "meal-60k": "student + MEAL V2 on all 60,000 images (labels unused), 2 passes",
}
ABLATION = {
    "student": "ResNet-D student (label smoothing 0.1, zero-gamma)",
    "sk": "+ selective kernel",
    "anti-alias": "+ anti-aliased downsampling",
    "big-little": "+ Big-Little (alpha 2, beta 2)",
    "dropblock": "+ DropBlock (0.1, 3x3, last 2 stages)",
    "no-zero-gamma": "- zero-gamma",
    "no-label-smoothing": "- label smoothing",
    "mixup": "+ mixup (alpha 0.2)",
    "autoaugment": "+ AutoAugment (ImageNet policy)",
    "kd": "+ KD from the EfficientNet (T 1, label weight 0.5)",
    "all": "+ all of the above",
}


def figures(name):
    result = out / "eval" / name / "result.json"
    if not result.is_file():
        return None
    r = json.loads(result.read_text())
    clean = r["clean"]["top1_error"] * 100
    ce = r["corruptions"]["mean_error"] * 100
    minutes = None
    csv = out / name / "metrics.csv"
    if csv.is_file():
        lines = csv.read_text().splitlines()[1:]
        minutes = sum(float(l.split(",")[4]) for l in lines) / 60
    return clean, ce, r["clean"]["images"], minutes


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
        delta = ""
        if ref and name != base:
            delta = f" ({clean - ref[0]:+.2f})", f" ({ce - ref[1]:+.2f})"
        else:
            delta = "", ""
        m = f"{minutes:.1f}" if minutes is not None else "-"
        print(f"| {label} | {clean:.2f}{delta[0]} | {ce:.2f}{delta[1]} | {m} |")


any_f = next((figures(n) for n in list(ROWS) + list(ABLATION) if figures(n)), None)
images = any_f[2] if any_f else 0
print(f"Fashion-MNIST test images evaluated: {images}; corruption error = mean top-1 error over the")
print("15 benchmark corruptions x 5 severities of Fashion-MNIST-C (`hardy corrupt`).\n")
table(ROWS)
print()
table(ABLATION, base="student")
