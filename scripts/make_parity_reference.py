#!/usr/bin/env python3
"""Make the PIL/torchvision parity references for Hardy's image preprocessing.

Hardy's Rust preprocessing (`engine/src/preprocess.rs`) must reproduce what a PyTorch
user gets from torchvision's evaluation transform on a PIL image::

    img = Image.open(path).convert("RGB")          # torchvision.datasets.folder.pil_loader
    img = transforms.Resize(256)(img)
    img = transforms.CenterCrop(224)(img)

Installing torch only for this is too heavy, so this script re-implements those two
transforms with Pillow and plain arithmetic, following torchvision's source line by line
(torchvision 0.20, ``torchvision/transforms/functional.py`` and ``_functional_pil.py``):

* ``F.resize`` -> ``_compute_resized_output_size``: with ``size = [s]`` the shorter side
  becomes ``s`` and the longer side ``int(s * long / short)`` (truncation); if the image
  already has that size it is returned unchanged; otherwise ``F_pil.resize`` calls
  ``img.resize((new_w, new_h), Image.BILINEAR)`` (PIL's bilinear is an antialiased
  convolution when downscaling, which is why torchvision's ``antialias`` flag is moot for
  PIL images).
* ``F.center_crop``: if the crop is larger than the image, pad with zeros by
  ``(crop - size) // 2`` on the left/top and ``(crop - size + 1) // 2`` on the right/bottom;
  then crop at ``top = int(round((h - crop_h) / 2.0))``, ``left = int(round((w - crop_w) /
  2.0))``. Python's ``round`` rounds halves to even, and the Rust code copies that.

Inputs: the ImageNet sample photos shipped in the foolbox 3.3.4 wheel. The Rust tests fetch
them with ``engine::provision::foolbox_imagenet_samples()`` into
``~/.cache/hardy/foolbox-3.3.4/``; run those tests once (``cargo test -p hardy-engine
preprocess``), or unpack ``foolbox/data/imagenet_*.jpg`` from ``pip download
--no-deps foolbox==3.3.4`` into that directory, before running this script. Because those
photos are all square, the script also derives small lossless PNG inputs (non-square,
grayscale, RGBA) from them; those derived inputs are ours and are committed next to the
references in ``tests/data/parity/``. The foolbox JPEGs themselves are not committed.

Usage::

    python3 -m pip install pillow numpy
    python3 scripts/make_parity_reference.py [FOOLBOX_DIR] [--out tests/data/parity] \
        [--decoded-dir /tmp/hardy-parity-decoded]

Writes ``<case>.ref.png`` (the uint8 RGB result of resize + center crop, lossless) for
each case, the derived ``input_*.png`` files, and ``manifest.json``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FOOLBOX = Path.home() / ".cache" / "hardy" / "foolbox-3.3.4"


def torchvision_resize(img: Image.Image, size: int, resample=Image.BILINEAR) -> Image.Image:
    """transforms.Resize(size) on a PIL image (bilinear unless `resample` says otherwise), see
    module docstring. benches/peers/common.py uses it too."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def torchvision_center_crop(img: Image.Image, crop_h: int, crop_w: int) -> Image.Image:
    """transforms.CenterCrop((crop_h, crop_w)) on a PIL image, see module docstring."""
    w, h = img.size
    if crop_w > w or crop_h > h:
        left = (crop_w - w) // 2 if crop_w > w else 0
        top = (crop_h - h) // 2 if crop_h > h else 0
        right = (crop_w - w + 1) // 2 if crop_w > w else 0
        bottom = (crop_h - h + 1) // 2 if crop_h > h else 0
        # F_pil.pad with padding_mode="constant", fill=0.
        padded = Image.new(img.mode, (w + left + right, h + top + bottom), 0)
        padded.paste(img, (left, top))
        img = padded
        w, h = img.size
        if (w, h) == (crop_w, crop_h):
            return img
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def derive_inputs(foolbox: Path, out: Path) -> list[dict]:
    """Lossless non-square / grayscale / RGBA inputs cut from the foolbox photos."""
    derived = []

    def save(name, img, source, how):
        path = out / name
        img.save(path, optimize=True)
        derived.append({"file": name, "source": source, "derived": how})

    src = "imagenet_01_559.jpg"
    img = Image.open(foolbox / src).convert("RGB")
    save("input_wide_320x188.png", img.crop((64, 160, 384, 348)), src,
         "PIL-decoded, cropped to (64,160)-(384,348), saved as PNG")

    src = "imagenet_03_990.jpg"
    img = Image.open(foolbox / src).convert("RGB")
    save("input_tall_180x291.png", img.crop((170, 100, 350, 391)), src,
         "PIL-decoded, cropped to (170,100)-(350,391), saved as PNG")

    src = "imagenet_05_853.jpg"
    img = Image.open(foolbox / src).convert("L")
    save("input_gray_301x257.png", img.crop((100, 120, 401, 377)), src,
         "PIL-decoded, convert('L'), cropped to (100,120)-(401,377), saved as PNG")

    src = "imagenet_07_609.jpg"
    img = Image.open(foolbox / src).convert("RGB").crop((200, 220, 421, 385))
    # A diagonal alpha ramp, so that any premultiplication would show.
    w, h = img.size
    alpha = (np.add.outer(np.arange(h), np.arange(w)) * 255 // (w + h - 2)).astype(np.uint8)
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    save("input_rgba_221x165.png", rgba, src,
         "PIL-decoded, cropped to (200,220)-(421,385), alpha = diagonal ramp, saved as PNG")

    # JPEG inputs of our own, each with Pillow's full-size decoding next to it
    # (<file>.decoded.png), so that the Rust tests can pin decoding alone, exactly.
    def save_jpeg(name, img, source, how, **options):
        path = out / name
        img.save(path, "JPEG", **options)
        Image.open(path).convert("RGB").save(out / f"{name}.decoded.png", optimize=True)
        derived.append({"file": name, "source": source, "derived": how,
                        "decoded": f"{name}.decoded.png"})

    src = "imagenet_02_438.jpg"
    img = Image.open(foolbox / src).convert("RGB")
    save_jpeg("input_progressive_320x240.jpg", img.crop((96, 136, 416, 376)), src,
              "PIL-decoded, cropped to (96,136)-(416,376), saved as a progressive JPEG, "
              "quality 90, 4:2:0", quality=90, progressive=True)
    src = "imagenet_04_949.jpg"
    img = Image.open(foolbox / src).convert("RGB")
    save_jpeg("input_baseline_301x203.jpg", img.crop((50, 70, 351, 273)), src,
              "PIL-decoded, cropped to (50,70)-(351,273) (odd sizes: partial MCUs), saved "
              "as a baseline JPEG, quality 85, 4:2:0", quality=85)
    save_jpeg("input_444_160x120.jpg", img.crop((0, 0, 160, 120)), src,
              "PIL-decoded, cropped to (0,0)-(160,120), saved as a baseline JPEG, "
              "quality 95, 4:4:4", quality=95, subsampling=0)
    return derived


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("foolbox_dir", nargs="?", type=Path, default=DEFAULT_FOOLBOX)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "parity")
    parser.add_argument(
        "--decoded-dir",
        type=Path,
        help="also save PIL's full-size decoding of each foolbox JPEG case here as "
        "<case>.decoded.png (not committed); point HARDY_PARITY_DECODED_DIR at it to let "
        "the Rust parity test split the error into decoding and resizing",
    )
    args = parser.parse_args()
    if not (args.foolbox_dir / "imagenet_00_243.jpg").is_file():
        print(
            f"{args.foolbox_dir} lacks the foolbox ImageNet samples: run "
            "`cargo test -p hardy-engine preprocess` once (it fetches them), or unpack "
            "foolbox/data/imagenet_*.jpg from `pip download --no-deps foolbox==3.3.4` there.",
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    derived = derive_inputs(args.foolbox_dir, args.out)

    # (case name, input, where the input lives, resize, crop_h, crop_w)
    cases = [
        ("jpeg_512sq", "imagenet_00_243.jpg", "foolbox", 256, 224, 224),
        ("jpeg_1024x683", "imagenet_10_541.jpg", "foolbox", 256, 224, 224),
        ("jpeg_512sq_b", "imagenet_14_129.jpg", "foolbox", 256, 224, 224),
        ("png_wide", "input_wide_320x188.png", "derived", 256, 224, 224),
        ("png_tall", "input_tall_180x291.png", "derived", 256, 224, 224),
        ("png_gray", "input_gray_301x257.png", "derived", 256, 224, 224),
        ("png_rgba", "input_rgba_221x165.png", "derived", 256, 224, 224),
        # Crop larger than the resized image in one dimension (zero padding) and a
        # half-pixel centre offset (272 - 223 = 49 -> round(24.5) = 24, half to even).
        ("png_wide_pad", "input_wide_320x188.png", "derived", 160, 224, 223),
        # Non-square crop.
        ("png_tall_rect", "input_tall_180x291.png", "derived", 256, 200, 240),
        ("jpeg_progressive", "input_progressive_320x240.jpg", "derived", 256, 224, 224),
        ("jpeg_odd_baseline", "input_baseline_301x203.jpg", "derived", 256, 224, 224),
    ]
    entries = []
    for name, file, where, resize, crop_h, crop_w in cases:
        path = (args.foolbox_dir if where == "foolbox" else args.out) / file
        img = Image.open(path).convert("RGB")
        resized = torchvision_resize(img, resize)
        out = torchvision_center_crop(resized, crop_h, crop_w)
        if args.decoded_dir and where == "foolbox":
            args.decoded_dir.mkdir(parents=True, exist_ok=True)
            img.save(args.decoded_dir / f"{name}.decoded.png")
        arr = np.asarray(out, dtype=np.uint8)
        assert arr.shape == (crop_h, crop_w, 3), arr.shape
        ref = f"{name}.ref.png"
        Image.fromarray(arr, "RGB").save(args.out / ref, optimize=True)
        entries.append({
            "name": name,
            "input": file,
            "source": f"foolbox==3.3.4 foolbox/data/{file}" if where == "foolbox" else "derived",
            "input_size": list(img.size),
            "resize": resize,
            "resized_size": list(resized.size),
            "crop": [crop_h, crop_w],
            "interpolation": "bilinear",
            "reference": ref,
        })
        print(f"{name}: {file} {img.size} -> {resized.size} -> {out.size}")

    manifest = {
        "about": "References for engine/src/preprocess.rs parity tests; made by "
                 "scripts/make_parity_reference.py (torchvision Resize + CenterCrop "
                 "semantics on PIL images).",
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "derived_inputs": derived,
        "cases": entries,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(os.path.getsize(args.out / d["file"]) + (os.path.getsize(args.out / d["decoded"]) if "decoded" in d else 0) for d in derived)
    print(f"derived inputs: {total} bytes; wrote {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
