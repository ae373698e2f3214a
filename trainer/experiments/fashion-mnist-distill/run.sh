#!/usr/bin/env bash
# The distillation experiment of trainer/README.md, one command from the repository root:
#   bash trainer/experiments/fashion-mnist-distill/run.sh [OUT]      (default runs/fashion-mnist-distill)
# Every step resumes or is skipped when its output exists, so an interrupted run can be restarted.
#  1. teachers: the shipped Noisy Student EfficientNet (models/fashion-mnist-effnet/3) and a
#     larger ResNet-D trained here (teacher-resnet.toml), exported to ONNX;
#  2. the ResNet student on labels (student.toml);
#  3. from that checkpoint, the same number of epochs again: MEAL V2 from both teachers, and, as
#     the control with equal compute, more training on labels;
#  4. the Assemble ablation: each tweak or regulariser on top of the student, trained from scratch;
#  5. clean and corruption error of every model (`hardy eval`, Fashion-MNIST-C made by
#     `hardy corrupt`; set FMNIST_C to reuse one, LIMIT to evaluate the first N test images),
#     collected into OUT/results.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-runs/fashion-mnist-distill}
mkdir -p "$out/configs"
out=$(cd "$out" && pwd)
cd "$root"
H=${HARDY:-target/release/hardy}
[ -n "${HARDY:-}" ] || cargo build --release --bin hardy
FMNIST_C=${FMNIST_C:-$out/fashion-mnist-c}
LIMIT=${LIMIT:-10000}

# variant NAME SED-ARGS...: the student's config with lines replaced or added.
variant() {
    local name=$1
    shift
    sed "$@" "$here/student.toml" > "$out/configs/$name.toml"
}
# distill_table NAME TEACHERS LABEL_WEIGHT VARIANTS [DISCRIMINATOR]: appends [train.distill].
distill_table() {
    {
        echo "[train.distill]"
        echo "teachers = [$2]"
        echo "temperature = 1.0"
        echo "label_weight = $3"
        echo "augment_variants = $4"
        [ -z "${5:-}" ] || echo "discriminator = $5"
    } >> "$out/configs/$1.toml"
}
train() { # train NAME MODE
    [ -f "$out/$1/done" ] && return
    $H train "$2" --config "$out/configs/$1.toml" --out "$out/$1" | tee "$out/$1.log"
    touch "$out/$1/done"
}
export_model() { # export RUN -> OUT/models/RUN/1/model.onnx
    [ -f "$out/models/$1/1/model.onnx" ] || $H export "$out/$1" --out "$out/models/$1/1/model.onnx"
}

# 1. Teachers.
cp "$here/teacher-resnet.toml" "$out/configs/teacher-resnet.toml"
train teacher-resnet supervised
export_model teacher-resnet
TEACHERS="\"$root/models/fashion-mnist-effnet/3\", \"$out/models/teacher-resnet/1\""

# 2. The student on labels: the baseline of both comparisons.
variant student -e ''
train student supervised

# 3. MEAL V2 (soft targets only, discriminator, teacher outputs cached per augmentation
#    variant) and the equal-compute control, both starting from the student.
variant meal -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|"
distill_table meal "$TEACHERS" 0.0 4 "{ lr = 1e-4, weight = 1.0 }"
train meal distill
variant control -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|"
train control supervised

# 4. Ablation: one change at a time, from scratch.
variant sk -e 's|^resolution = 28|resolution = 28\nselective_kernel = true|'
variant anti-alias -e 's|^resolution = 28|resolution = 28\nanti_alias = true|'
variant big-little -e 's|^resolution = 28|resolution = 28\nbig_little = { alpha = 2, beta = 2 }|'
variant dropblock -e 's|^resolution = 28|resolution = 28\ndrop_block = { drop_prob = 0.1, block_size = 3, stages = 2 }|'
variant no-zero-gamma -e 's|^zero_init_last = true|zero_init_last = false|'
variant no-label-smoothing -e 's|^label_smoothing = 0.1|label_smoothing = 0.0|'
variant mixup -e 's|^seed = 3|seed = 3\nmixup_alpha = 0.2|'
variant autoaugment -e 's|randaugment_ops = 0,|autoaugment = true,|'
variant kd -e ''
distill_table kd "\"$root/models/fashion-mnist-effnet/3\"" 0.5 0
variant all -e 's|^resolution = 28|resolution = 28\nselective_kernel = true\nanti_alias = true\nbig_little = { alpha = 2, beta = 2 }\ndrop_block = { drop_prob = 0.1, block_size = 3, stages = 2 }|' \
    -e 's|randaugment_ops = 0,|autoaugment = true,|' \
    -e 's|^seed = 3|seed = 3\nmixup_alpha = 0.2|'
distill_table all "\"$root/models/fashion-mnist-effnet/3\"" 0.5 0
ABLATION="sk anti-alias big-little dropblock no-zero-gamma no-label-smoothing mixup autoaugment kd all"
for v in $ABLATION; do
    case $v in kd | all) train "$v" distill ;; *) train "$v" supervised ;; esac
done

# 5. Clean and corruption error (the 15 benchmark corruptions, severities 1-5).
[ -d "$FMNIST_C" ] || $H corrupt --data fashion-mnist:test --out "$FMNIST_C" --resize 28 --crop 28 --format png
evaluate() { # evaluate NAME MODEL
    [ -f "$out/eval/$1/result.json" ] ||
        $H eval --model "$2" --suite clean,c --data fashion-mnist:test --c-data "$FMNIST_C" \
            --limit "$LIMIT" --out "$out/eval/$1"
}
evaluate effnet-ns "$root/models/fashion-mnist-effnet/3"
for r in teacher-resnet student meal control $ABLATION; do
    export_model "$r"
    evaluate "$r" "$out/models/$r/1"
done
python3 "$here/table.py" "$out" > "$out/results.md"
cat "$out/results.md"
