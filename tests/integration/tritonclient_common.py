"""What the tritonclient checks (HTTP and gRPC) share: the samples, the check line, and the
Fashion-MNIST sample PNGs as pixels (no Pillow needed)."""

import zlib
from pathlib import Path

import numpy as np


def load_samples(samples_dir: str):
    """The sample PNGs, sorted, and their labels (from `testNNNNN-label.png`)."""
    paths = sorted(Path(samples_dir).glob("*.png"))
    return paths, [p.stem.split("-", 1)[1] for p in paths]


def slug(label: str) -> str:
    return label.lower().replace("/", "-").replace(" ", "-")


def check(name, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {name} {detail}", flush=True)
    assert ok, f"{name}: {detail}"


def png_gray_pixels(data: bytes) -> np.ndarray:
    """Decodes the 8-bit greyscale, non-interlaced PNG samples without Pillow."""
    pos, chunks = 8, b""
    width = height = 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            assert body[8] == 8 and body[9] == 0 and body[12] == 0, "sample PNGs are 8-bit grey"
        elif kind == b"IDAT":
            chunks += body
        pos += 12 + n
    raw = zlib.decompress(chunks)
    rows, prev = [], bytearray(width)
    for y in range(height):
        f, line = raw[y * (width + 1)], bytearray(raw[y * (width + 1) + 1 : (y + 1) * (width + 1)])
        for x in range(width):
            a = line[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width)
