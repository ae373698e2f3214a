#!/usr/bin/env python3
"""Extract the ImageNet class lists that `eval/src/subsets.rs` compiles in.

Hardy's evaluator needs, as data in the repository:

* the 1000 ImageNet-1k WordNet ids (wnids) in class-index order (the order of the sorted
  ``train/`` folder names, which every torchvision-trained classifier uses),
* a human-readable name for each of them (the WordNet lemmas, e.g. ``tench, Tinca tinca``),
* the 200-class subsets of ImageNet-A and ImageNet-R: their wnids and their indices into the
  1000 classes.

All of them ship in the pure-Python ``timm`` wheel under ``timm/data/_info/``. This script
downloads that wheel (``pip download --no-deps``, nothing is installed), reads the files from
the zip and writes them to ``data/classes/``:

    imagenet_synsets.txt     1000 wnids, class-index order (copied)
    imagenet_lemmas.txt      1000 lemmas, same order (from imagenet_synset_to_lemma.txt,
                             which covers all 21k synsets, restricted to the 1000)
    imagenet_a_synsets.txt   200 wnids (copied)
    imagenet_a_indices.txt   200 class indices (copied)
    imagenet_r_synsets.txt   200 wnids (copied)
    imagenet_r_indices.txt   200 class indices (copied)

Usage: ``python3 scripts/extract_imagenet_classes.py [--wheel PATH] [--version 1.0.31]``.
The committed files came from timm 1.0.31.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import zipfile

INFO = "timm/data/_info/"
COPIED = [
    "imagenet_synsets.txt",
    "imagenet_a_synsets.txt",
    "imagenet_a_indices.txt",
    "imagenet_r_synsets.txt",
    "imagenet_r_indices.txt",
]


def fetch_wheel(version: str, dest: pathlib.Path) -> pathlib.Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), f"timm=={version}"],
        check=True,
    )
    wheels = sorted(dest.glob("timm-*.whl"))
    if not wheels:
        sys.exit(f"pip download left no timm wheel in {dest}")
    return wheels[0]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=pathlib.Path, help="a timm wheel already downloaded")
    parser.add_argument("--version", default="1.0.31", help="timm version to download")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent.parent / "data" / "classes",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(args.version, pathlib.Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            files = {name: z.read(INFO + name).decode("utf-8") for name in COPIED}
            lemma_text = z.read(INFO + "imagenet_synset_to_lemma.txt").decode("utf-8")

    wnids = lines(files["imagenet_synsets.txt"])
    assert len(wnids) == 1000 and len(set(wnids)) == 1000, "expected 1000 distinct wnids"
    lemmas = {}
    for line in lemma_text.splitlines():
        if line.strip():
            wnid, lemma = line.rstrip("\n").split("\t", 1)
            lemmas[wnid] = lemma.strip()
    missing = [w for w in wnids if w not in lemmas]
    assert not missing, f"no lemma for {missing[:5]}"

    for subset in ("a", "r"):
        synsets = lines(files[f"imagenet_{subset}_synsets.txt"])
        indices = [int(i) for i in lines(files[f"imagenet_{subset}_indices.txt"])]
        assert len(synsets) == len(indices) == 200, subset
        assert [wnids[i] for i in indices] == synsets, f"imagenet_{subset}: indices and wnids disagree"

    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text("\n".join(lines(text)) + "\n")
    (args.out / "imagenet_lemmas.txt").write_text("\n".join(lemmas[w] for w in wnids) + "\n")
    print(f"wrote {len(COPIED) + 1} files to {args.out} from {wheel.name}")


if __name__ == "__main__":
    main()
