#!/usr/bin/env bash
# AutoAttack parity: Hardy's `hardy eval --suite autoattack` against torchattacks' attacks run
# by scripts/autoattack_reference.py (the reference's standard version, on the model converted
# with onnx2torch), on the first N images of DATA, L-inf EPS/255. Prints the robust count after
# each attack for both, and writes both JSON results under OUT.
#   scripts/autoattack_parity.sh MODEL_DIR|VERSION_DIR [N] [EPS] [OUT] [DATA]
# e.g. scripts/autoattack_parity.sh models/fashion-mnist-effnet 1000 8 /tmp/parity-effnet
#      scripts/autoattack_parity.sh target/lite0 20 1 /tmp/parity-lite0-1 foolbox:imagenet
# SIDE=hardy or SIDE=torch runs one half only (the two can run at once, into the same OUT);
# the table is printed once both results are in OUT. Both halves resume at their last finished
# batch when rerun into the same OUT (the seconds recorded are those of the last run).
# DATA: fashion-mnist:test (the default; grey 28x28, crop = image, the pixels are the IDX
# bytes / 255) or foolbox:imagenet (the 20 photos, in file-name order as Hardy reads them;
# the torch side gets the model's preprocessing done by PIL as torchvision does it: shorter
# side resized to resolution / crop_pct with the model's filter, centre crop, / 255, the
# transform engine/src/preprocess.rs is tested to match).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model directory}
n=${2:-1000}
eps=${3:-8}
out=${4:-/tmp/hardy-parity-$(basename "$model")}
data=${5:-fashion-mnist:test}
mkdir -p "$out"
hardy=${HARDY:-target/release/hardy}
[ -x "$hardy" ] || cargo build --release --bin hardy
pythonpath=$(scripts/torch-env.sh)
# The highest version's ONNX file (the one hardy eval picks), its preprocessing from the
# hardy.config metadata, the files where Hardy's fetcher put them.
if [ -f "$model/model.onnx" ]; then onnx=$model/model.onnx; else onnx=$(ls -d "$model"/*/ | sort -V | tail -1)model.onnx; fi
# (A one-image run makes Hardy fetch the data set into its cache first.)
"$hardy" eval --model "$model" --suite clean --data "$data" --limit 1 --out "$out/probe" --quiet >/dev/null
source scripts/cache-root.sh
cache=$(hardy_cache_root)
PYTHONPATH="$pythonpath" python3 - "$out" "$n" "$eps" "$cache" "$onnx" "$data" <<'PY'
import gzip, json, math, struct, sys, os, glob, tomllib
import onnx
out, n, eps, cache, path, data = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
pre = tomllib.loads(meta["hardy.config"])["preprocess"]
if data == "fashion-mnist:test":
    idx = os.path.join(cache, "dataset-fashion-mnist")
    imgs = glob.glob(os.path.join(idx, "**", "t10k-images-idx3-ubyte.gz"), recursive=True)[0]
    labs = glob.glob(os.path.join(idx, "**", "t10k-labels-idx1-ubyte.gz"), recursive=True)[0]
    raw = gzip.open(imgs).read()[16:16 + n * 784]
    labels = list(gzip.open(labs).read()[8:8 + n])
    values, (c, h, w), batch = [b / 255.0 for b in raw], (1, 28, 28), 250
elif data == "foolbox:imagenet":
    from PIL import Image
    files = sorted(glob.glob(os.path.join(cache, "foolbox-*", "imagenet_*_*.*")))[:n]
    labels = [int(os.path.splitext(os.path.basename(f))[0].split("_")[2]) for f in files]
    size = pre.get("resolution", 224)
    crop_pct = pre.get("crop_pct", 0.875)
    resize = int(math.floor(size / crop_pct))
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[pre.get("interpolation", "bilinear")]
    values = []
    for f in files:
        im = Image.open(f).convert("RGB")
        iw, ih = im.size
        # torchvision Resize(int) on a PIL image: shorter side to `resize`, longer truncated.
        ow, oh = (resize, int(resize * ih / iw)) if iw <= ih else (int(resize * iw / ih), resize)
        im = im.resize((ow, oh), resample)
        top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
        px = im.tobytes()
        for ch in range(3):
            values.extend(px[i * 3 + ch] / 255.0 for i in range(size * size))
    n, (c, h, w), batch = len(files), (3, size, size), 10
else:
    sys.exit(f"autoattack_parity.sh: unknown data set {data}")
with open(os.path.join(out, "pixels.f32"), "wb") as f:
    f.write(struct.pack(f"<{len(values)}f", *values))
json.dump({"n": n, "c": c, "h": h, "w": w, "labels": labels, "mean": pre["mean"], "std": pre["std"],
           "eps": eps / 255.0, "norm": "Linf", "seed": 0, "batch_size": batch},
          open(os.path.join(out, "pixels.f32.json"), "w"))
PY
side=${SIDE:-both}
if [ "$side" != torch ]; then
start=$(date +%s)
"$hardy" eval --model "$model" --suite autoattack,pgd --eps "$eps" --aa-eps "$eps" --data "$data" \
    --limit "$n" --out "$out/hardy" --quiet
echo $(( $(date +%s) - start )) > "$out/hardy.seconds"
fi
if [ "$side" != hardy ]; then
start=$(date +%s)
PYTHONPATH="$pythonpath" python3 scripts/autoattack_reference.py "$onnx" "$out/pixels.f32" --out "$out/torch.json" \
    --progress "$out/torch-progress.jsonl" > /dev/null
echo $(( $(date +%s) - start )) > "$out/torch.seconds"
fi
[ -f "$out/hardy/result.json" ] && [ -f "$out/torch.json" ] || exit 0
hardy_s=$(cat "$out/hardy.seconds" 2>/dev/null || echo "?")
torch_s=$(cat "$out/torch.seconds" 2>/dev/null || echo "?")
python3 - "$out" "$hardy_s" "$torch_s" <<'PY'
import json, sys
out, hs, ts = sys.argv[1], sys.argv[2], sys.argv[3]
h = json.load(open(f"{out}/hardy/result.json"))
t = json.load(open(f"{out}/torch.json"))
row = h["autoattack"][0]
n = row["images"]
print(f"{h['model']['name']}: {n} images, L-inf {row['eps'] * 255:.1f}/255 (Hardy {hs} s, torchattacks {ts} s)")
print(f"  {'':10} {'Hardy':>8} {'torch':>8}")
print(f"  {'clean':10} {round(row['clean_accuracy'] * n):>8} {t['robust_count']['clean']:>8}")
for s in row["after"]:
    print(f"  {s['attack']:10} {s['robust']:>8} {t['robust_count'][s['attack']]:>8}")
if row.get("pgd_accuracy") is not None:
    print(f"  {'PGD-10':10} {round(row['pgd_accuracy'] * n):>8}")
PY
