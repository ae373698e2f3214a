#!/usr/bin/env bash
# Remakes the reports in docs/eval/ (run from the repository root). Release build, about 40 minutes
# on 2 CPU cores before the AutoAttack runs, which take hours more (below); every `hardy eval`
# and every torchattacks run resumes where it stopped when rerun.
#   - Fashion-MNIST-C: the 10,000 test images, all 19 corruptions x 5 severities, PNG, 28x28.
#   - the Noisy Student teacher is not shipped; this remakes it (deterministic: 87.01%) unless
#     runs/fashion-mnist-ns/teacher exists, and stops the run after the teacher stage.
set -euo pipefail
cargo build --release
H=target/release/hardy
WORK=${WORK:-/tmp/hardy-eval-work}
OUT=docs/eval
mkdir -p "$WORK"
[ -d "$WORK/fmnist-c" ] || $H corrupt --data fashion-mnist:test --out "$WORK/fmnist-c" \
    --resize 28 --crop 28 --format png --corruptions all
if [ ! -f "$WORK/teacher/1/model.onnx" ]; then
    if [ ! -f runs/fashion-mnist-ns/teacher/done.json ]; then
        $H train noisy-student --config trainer/experiments/fashion-mnist-noisy-student.toml \
            --out runs/fashion-mnist-ns &
        pid=$!
        until [ -f runs/fashion-mnist-ns/teacher/done.json ]; do sleep 10; done
        kill $pid || true
    fi
    $H export runs/fashion-mnist-ns/teacher --out "$WORK/teacher/1/model.onnx"
fi
[ -f "$WORK/lite0/1/model.onnx" ] || $H import lite0 --out "$WORK/lite0/1/model.onnx"

c_run() {
    $H eval --model "$2" --suite clean,c --data fashion-mnist:test --c-data "$WORK/fmnist-c" \
        --corruptions all --out "$WORK/$1-c"
}
r_run() {
    $H eval --model "$2" --suite clean,p,fgsm,pgd --data fashion-mnist:test --limit 1000 \
        --perturbations all --out "$WORK/$1-robust"
}
c_run effnet-v3 models/fashion-mnist-effnet/3
c_run teacher "$WORK/teacher/1"
c_run linear models/fashion-mnist-linear
c_run effnet-v2 models/fashion-mnist-effnet/2
c_run effnet-v1 models/fashion-mnist-effnet/1
r_run effnet-v3 models/fashion-mnist-effnet/3
r_run teacher "$WORK/teacher/1"
# AutoAttack (standard, L-inf) beside PGD-10, and torchattacks' run of the same sequence on the
# same images (scripts/autoattack_parity.sh): the Fashion-MNIST models on 1,000 test images at
# 8/255 (hours each for the CNNs, per side: the EfficientNet's Hardy side took 2 h 34 min on a
# shared 2-core machine, its torchattacks side more), Lite0 on the 20 photos at 1/255 and 4/255.
#   aa_run NAME MODEL [N EPS DATA]
aa_run() {
    HARDY=$H scripts/autoattack_parity.sh "$2" "${3:-1000}" "${4:-8}" "$WORK/$1-parity" \
        "${5:-fashion-mnist:test}"
    mkdir -p "$OUT/$1-autoattack/parts"
    cp "$WORK/$1-parity"/hardy/{result.json,report.md,attack_accuracy.png} "$OUT/$1-autoattack/"
    cp "$WORK/$1-parity"/hardy/parts/autoattack__*__square.json "$OUT/$1-autoattack/parts/"
    cp "$WORK/$1-parity"/torch.json "$OUT/$1-autoattack/torchattacks.json"
}
aa_run linear models/fashion-mnist-linear
aa_run effnet-v3 models/fashion-mnist-effnet/3
aa_run meal models/fashion-mnist-resnet-meal
aa_run lite0-1 "$WORK/lite0/1" 20 1 foolbox:imagenet
aa_run lite0-4 "$WORK/lite0/1" 20 4 foolbox:imagenet
$H eval --model "$WORK/lite0/1" --suite clean,c,p,fgsm,pgd --data foolbox:imagenet \
    --corruptions all --perturbations all --out "$WORK/lite0"
# (named, not globbed: $WORK/fmnist-c is the data set, not a report)
for name in effnet-v3-c teacher-c linear-c effnet-v2-c effnet-v1-c effnet-v3-robust \
    teacher-robust lite0; do
    mkdir -p "$OUT/$name"
    cp "$WORK/$name"/result.json "$WORK/$name"/report.md "$WORK/$name"/*.png "$OUT/$name/"
done
