#!/usr/bin/env python3
"""Times the Python port of the corruptions (imagecorruptions-imaug 1.1.5) per 224x224 image.

For each of the 19 corruptions at severity 3 on corrupt/tests/data/corrupt/input224.png: a warm-up
call (numba's JIT for glass_blur included), then REPS calls timed by the thread's CPU time
(time.thread_time, as the Rust side does); prints progress on stderr and a JSON object
{corruption: median CPU milliseconds} on stdout, plus the time of writing one JPEG file as
the released set was written. Single-threaded: run with
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 (benches/corrupt_speed.sh does),
and OpenCV is limited to one thread here.
"""
import json
import os
import sys
import time

import cv2
import numpy as np
from PIL import Image

cv2.setNumThreads(1)
from imagecorruptions import corrupt, get_corruption_names  # noqa: E402

REPS = int(os.environ.get("REPS", "20"))
here = os.path.dirname(os.path.abspath(__file__))
x = np.array(Image.open(os.path.join(here, "..", "corrupt", "tests", "data", "corrupt", "input224.png")).convert("RGB"))
out = {}
for name in get_corruption_names("all"):
    corrupt(x, severity=3, corruption_name=name)
    ts = []
    for i in range(REPS):
        np.random.seed(i)
        t = time.thread_time()
        corrupt(x, severity=3, corruption_name=name)
        ts.append(time.thread_time() - t)
    out[name] = float(np.median(ts) * 1e3)
    print(f"{name:20s} {out[name]:8.2f} ms", file=sys.stderr)
# Writing one released-style file: Pillow's save(quality=85, optimize=True), as the released
# ImageNet-C files were written (key "file:jpeg_q85_optimize", read by the Rust bench).
import io  # noqa: E402

img = Image.fromarray(x)
ts = []
for i in range(REPS * 5):
    t = time.thread_time()
    img.save(io.BytesIO(), "JPEG", quality=85, optimize=True)
    ts.append(time.thread_time() - t)
out["file:jpeg_q85_optimize"] = float(np.median(ts) * 1e3)
print(f"{'file:jpeg_q85_optimize':20s} {out['file:jpeg_q85_optimize']:8.2f} ms", file=sys.stderr)
print(json.dumps(out, indent=1))
