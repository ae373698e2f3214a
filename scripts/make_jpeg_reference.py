"""Writes the Pillow (libjpeg-turbo) JPEG files that Hardy's JPEG encoder must reproduce byte
for byte, and Pillow's decoding of one of them (the round trip at a size that is not a
multiple of 16). Run from the repository root with an interpreter that has Pillow:

    python scripts/make_jpeg_reference.py

Inputs: corrupt/tests/data/corrupt/input224.png and crops of it. Outputs go to
corrupt/tests/data/corrupt/jpeg/. The released ImageNet-C files were written by
`Image.fromarray(...).save(path, quality=85, optimize=True)`; `hardy corrupt` does the same.
"""
import io
import os

from PIL import Image, features

DIR = "corrupt/tests/data/corrupt/jpeg"
os.makedirs(DIR, exist_ok=True)
src = Image.open("corrupt/tests/data/corrupt/input224.png").convert("RGB")
cases = [
    # name, box (left, top, right, bottom), quality, optimize
    ("q85_opt_224x224", (0, 0, 224, 224), 85, True),
    ("q85_opt_97x61", (40, 50, 137, 111), 85, True),
    ("q15_std_224x224", (0, 0, 224, 224), 15, False),
    ("q50_std_100x70", (10, 120, 110, 190), 50, False),
    ("q85_opt_8x8", (100, 100, 108, 108), 85, True),
]
for name, box, quality, optimize in cases:
    img = src.crop(box)
    img.save(f"{DIR}/{name}.jpg", quality=quality, optimize=optimize)
# Pillow's decoding of a round trip at 100x70 (h even, not a multiple of 16: the chroma rows
# below the image repeat the last real one)
buf = io.BytesIO()
src.crop((10, 120, 110, 190)).save(buf, "JPEG", quality=90)
Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(f"{DIR}/roundtrip_q90_100x70.png")
# Pillow's decoding of each file (as RGB PNG), which engine::decode (libjpeg-turbo) must match
# exactly: the five above, grey, 4:4:4 and restart markers every 5 MCUs (progressive files are
# in tests/data/parity, made by make_parity_reference.py).
more = [
    ("grey_q85_61x47", src.crop((20, 30, 81, 77)).convert("L"), {"quality": 85}),
    ("q80_444_50x40", src.crop((60, 60, 110, 100)), {"quality": 80, "subsampling": 0}),
    ("q85_rst_97x61", src.crop((40, 50, 137, 111)), {"quality": 85, "restart_marker_blocks": 5}),
]
for name, img, kw in more:
    img.save(f"{DIR}/{name}.jpg", **kw)
for name in [c[0] for c in cases] + [m[0] for m in more]:
    Image.open(f"{DIR}/{name}.jpg").convert("RGB").save(f"{DIR}/{name}.decoded.png")
print("Pillow", Image.__version__ if hasattr(Image, "__version__") else "", "libjpeg-turbo", features.version("jpg"))
