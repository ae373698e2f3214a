#!/usr/bin/env bash
# AutoAttack parity: Hardy's `hardy eval --suite autoattack` against torchattacks' attacks run
# by scripts/autoattack_reference.py (the reference's standard version, on the model converted
# with onnx2torch), on the first N Fashion-MNIST test images, L-inf EPS/255. Prints the robust
# count after each attack for both, and writes both JSON results under OUT.
#   scripts/autoattack_parity.sh MODEL_DIR|VERSION_DIR [N] [EPS] [OUT]
# e.g. scripts/autoattack_parity.sh models/fashion-mnist-effnet 1000 8 /tmp/parity-effnet
# SIDE=hardy or SIDE=torch runs one half only (the two can run at once, into the same OUT);
# the table is printed once both results are in OUT. Hardy's half resumes at the last finished
# attack when rerun into the same OUT.
# Fashion-MNIST models only (grey 28x28, crop = image): the pixels are the IDX bytes / 255.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model directory}
n=${2:-1000}
eps=${3:-8}
out=${4:-/tmp/hardy-parity-$(basename "$model")}
mkdir -p "$out"
hardy=${HARDY:-target/release/hardy}
[ -x "$hardy" ] || cargo build --release --bin hardy
pythonpath=$(scripts/torch-env.sh)
# The highest version's ONNX file (the one hardy eval picks), its normalisation from the
# hardy.config metadata, the IDX files where Hardy's fetcher put them.
if [ -f "$model/model.onnx" ]; then onnx=$model/model.onnx; else onnx=$(ls -d "$model"/*/ | sort -V | tail -1)model.onnx; fi
# (A one-image run makes Hardy fetch the data set into its cache first.)
"$hardy" eval --model "$model" --suite clean --data fashion-mnist:test --limit 1 --out "$out/probe" --quiet >/dev/null
idx=${HARDY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hardy}/dataset-fashion-mnist
PYTHONPATH="$pythonpath" python3 - "$out" "$n" "$eps" "$idx" "$onnx" <<'PY'
import gzip, json, struct, sys, os, glob, tomllib
import onnx
out, n, eps, idx, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
pre = tomllib.loads(meta["hardy.config"])["preprocess"]
imgs = glob.glob(os.path.join(idx, "**", "t10k-images-idx3-ubyte.gz"), recursive=True)[0]
labs = glob.glob(os.path.join(idx, "**", "t10k-labels-idx1-ubyte.gz"), recursive=True)[0]
raw = gzip.open(imgs).read()[16:16 + n * 784]
labels = list(gzip.open(labs).read()[8:8 + n])
with open(os.path.join(out, "pixels.f32"), "wb") as f:
    f.write(struct.pack(f"<{len(raw)}f", *[b / 255.0 for b in raw]))
json.dump({"n": n, "c": 1, "h": 28, "w": 28, "labels": labels, "mean": pre["mean"], "std": pre["std"],
           "eps": eps / 255.0, "norm": "Linf", "seed": 0, "batch_size": 250},
          open(os.path.join(out, "pixels.f32.json"), "w"))
PY
side=${SIDE:-both}
if [ "$side" != torch ]; then
start=$(date +%s)
"$hardy" eval --model "$model" --suite autoattack,pgd --eps "$eps" --aa-eps "$eps" --data fashion-mnist:test \
    --limit "$n" --out "$out/hardy" --quiet
echo $(( $(date +%s) - start )) > "$out/hardy.seconds"
fi
if [ "$side" != hardy ]; then
start=$(date +%s)
PYTHONPATH="$pythonpath" python3 scripts/autoattack_reference.py "$onnx" "$out/pixels.f32" --out "$out/torch.json" > /dev/null
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
