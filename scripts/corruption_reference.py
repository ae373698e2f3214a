#!/usr/bin/env python3
"""Reference data for Hardy's corruption fidelity test (corrupt/src/fidelity.rs).

Runs the maintained Python port of the ImageNet-C corruptions (PyPI imagecorruptions-imaug
1.1.5, pinned below) on the committed 224x224 input corrupt/tests/data/corrupt/input224.png and
writes, into corrupt/tests/data/corrupt/:

- det_<corruption>.png: for the 8 deterministic corruptions, severities 1..5 stacked vertically,
  each reduced to the pixels at even (row, column) -- a uniform quarter of the pixels, so PSNR
  over them estimates the full-image PSNR while keeping the committed data small (~1 MB);
- random_stats.json: for the 11 random corruptions and each severity, statistics of the output
  over SEEDS seeds (np.random.seed(i)): mean and standard deviation across seeds of
  diff_mean (mean of output - input), diff_std (std of output - input) and out_std (std of
  the output), all on the 0..255 scale.

Setup (once):  python3 -m venv /work/py-corrupt &&
               /work/py-corrupt/bin/pip install imagecorruptions-imaug==1.1.5 numba
Run:           /work/py-corrupt/bin/python scripts/corruption_reference.py
The input was made with --make-input from foolbox 3.3.4's imagenet_00_243.jpg (512x512):
Resize(256) bilinear, CenterCrop(224).
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

PORT = "imagecorruptions-imaug==1.1.5"
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corrupt", "tests", "data", "corrupt")
DETERMINISTIC = ["brightness", "contrast", "saturate", "pixelate", "jpeg_compression", "defocus_blur",
                 "zoom_blur", "gaussian_blur"]
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
          "snow", "frost", "fog", "elastic_transform", "spatter"]
SEEDS = 24


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-input", metavar="JPG", help="(re)make input224.png from a foolbox sample")
    args = ap.parse_args()
    if args.make_input:
        im = Image.open(args.make_input).convert("RGB").resize((256, 256), Image.BILINEAR)
        im.crop((16, 16, 240, 240)).save(os.path.join(DATA, "input224.png"))
    from imagecorruptions import corrupt  # the port

    x = np.array(Image.open(os.path.join(DATA, "input224.png")).convert("RGB"))
    assert x.shape == (224, 224, 3)
    for name in DETERMINISTIC:
        rows = [corrupt(x, severity=s, corruption_name=name)[::2, ::2] for s in range(1, 6)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(os.path.join(DATA, f"det_{name}.png"), optimize=True)
    stats = {"port": PORT, "seeds": SEEDS, "input": "input224.png", "corruptions": {}}
    xf = x.astype(np.float64)
    for name in RANDOM:
        per_sev = []
        for s in range(1, 6):
            vals = {"diff_mean": [], "diff_std": [], "out_std": []}
            for seed in range(SEEDS):
                np.random.seed(seed)
                kw = {"seed": seed} if name in ("glass_blur", "impulse_noise") else {}
                y = corrupt(x, severity=s, corruption_name=name, **kw).astype(np.float64)
                d = y - xf
                vals["diff_mean"].append(d.mean())
                vals["diff_std"].append(d.std())
                vals["out_std"].append(y.std())
            per_sev.append({k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))} for k, v in vals.items()})
        stats["corruptions"][name] = per_sev
        print(name, [round(p["diff_std"]["mean"], 2) for p in per_sev], file=sys.stderr)
    with open(os.path.join(DATA, "random_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)


if __name__ == "__main__":
    main()
