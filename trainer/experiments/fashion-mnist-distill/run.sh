#!/usr/bin/env bash
# The distillation experiment of trainer/README.md, one command from the repository root:
#   bash trainer/experiments/fashion-mnist-distill/run.sh [OUT]      (default runs/fashion-mnist-distill)
# Every step resumes or is skipped when its output exists, so an interrupted run can be restarted.
#  1. the ResNet student on labels (student.toml) and the Assemble ablation: each tweak or
#     regulariser added to (or removed from) the student, trained from scratch the same way;
#  2. from the student's checkpoint, the same number of steps again: MEAL V2 from two teachers,
#     the shipped Noisy Student EfficientNets (models/fashion-mnist-effnet/3, depth 1.5, and /1, depth 1.0),
#     on the labelled images and on labelled plus unlabelled ones, and, as the control with equal
#     compute, more training on labels;
#  3. clean and corruption error of every model (`hardy eval` on Fashion-MNIST-C made by
#     `hardy corrupt`; FMNIST_C reuses one; LIMIT: the first N test images, default 1,000, as in
#     the README; 10000 for the whole set, about 2 CPU-minutes per 2,000 images and model),
#     collected into OUT/results.md by table.py.
# JOBS trainings run at once (default 2: burn's CPU backend keeps about one core busy).
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
LIMIT=${LIMIT:-1000}
JOBS=${JOBS:-2}
NS="$root/models/fashion-mnist-effnet"

# variant NAME SED-ARGS...: the student's config with lines replaced or added.
variant() {
    local name=$1
    shift
    sed "$@" "$here/student.toml" > "$out/configs/$name.toml"
}
# distill_table NAME TEACHERS LABEL_WEIGHT VARIANTS [DISCRIMINATOR [LINE]]: appends
# [train.distill] (LINE: one more setting).
distill_table() {
    {
        echo "[train.distill]"
        echo "teachers = [$2]"
        echo "temperature = 1.0"
        echo "label_weight = $3"
        echo "augment_variants = $4"
        [ -z "${5:-}" ] || echo "discriminator = $5"
        [ -z "${6:-}" ] || echo "$6"
    } >> "$out/configs/$1.toml"
}
train() { # train NAME MODE
    [ -f "$out/$1/done" ] && return
    $H train "$2" --config "$out/configs/$1.toml" --out "$out/$1" > "$out/$1.log" 2>&1
    touch "$out/$1/done"
    echo "trained $1: $(tail -1 "$out/$1.log")"
}
after_student() { # like train, once the student has finished
    while [ ! -f "$out/student/done" ]; do sleep 10; done
    train "$@"
}
spawn() { # runs "$@" in the background, at most JOBS at once
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    "$@" &
}

# 1. The student on labels, and the ablation.
variant student -e ''
variant sk -e 's|^resolution = 28|resolution = 28\nselective_kernel = true|'
variant anti-alias -e 's|^resolution = 28|resolution = 28\nanti_alias = true|'
variant big-little -e 's|^resolution = 28|resolution = 28\nbig_little = { alpha = 2, beta = 2 }|'
variant dropblock -e 's|^resolution = 28|resolution = 28\ndrop_block = { drop_prob = 0.1, block_size = 3, stages = 2, ramp = false }|'
variant no-zero-gamma -e 's|^zero_init_last = true|zero_init_last = false|'
variant no-label-smoothing -e 's|^label_smoothing = 0.1|label_smoothing = 0.0|'
variant mixup -e 's|^seed = 3|seed = 3\nmixup_alpha = 0.2|'
variant autoaugment -e 's|randaugment_ops = 0,|autoaugment = true,|'
variant kd -e ''
distill_table kd "\"$NS/3\"" 0.5 0
variant all -e 's|^resolution = 28|resolution = 28\nselective_kernel = true\nanti_alias = true\nbig_little = { alpha = 2, beta = 2 }\ndrop_block = { drop_prob = 0.1, block_size = 3, stages = 2, ramp = false }|' \
    -e 's|randaugment_ops = 0,|autoaugment = true,|' \
    -e 's|^seed = 3|seed = 3\nmixup_alpha = 0.2|'
distill_table all "\"$NS/3\"" 0.5 0
ABLATION="sk anti-alias big-little dropblock no-zero-gamma no-label-smoothing mixup autoaugment kd all"
spawn train student supervised

# 2. MEAL V2 (soft targets only, discriminator, teacher outputs cached for 4 augmentation
#    variants) and the equal-compute control, both from the student's checkpoint.
variant meal -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|"
distill_table meal "\"$NS/3\", \"$NS/1\"" 0.0 4 "{ lr = 1e-4, weight = 1.0 }"
variant control -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|"
spawn after_student meal distill
spawn after_student control supervised
# MEAL V2 without the discriminator, from the same checkpoint.
variant meal-no-disc -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|"
distill_table meal-no-disc "\"$NS/3\", \"$NS/1\"" 0.0 4
spawn after_student meal-no-disc distill
# MEAL V2 needs no labels, so it can also learn from the 54,000 training images outside the
# labelled split, which the teachers saw as unlabelled data. At the control's compute: the
# control's 8 epochs are 8 x 93 batches of 64 = 47,616 images, and one epoch over the 6,000
# labelled plus the first 41,616 unlabelled images is the same 744 steps (warm-up: the same
# 47 steps). Labels are never read (label_weight 0).
for v in meal-unlabelled meal-no-disc-unlabelled; do
    variant $v -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|" \
        -e 's|^split_seed = 0|split_seed = 0\nunlabelled_limit = 41616|' \
        -e 's|^epochs = 8|epochs = 1|' -e 's|warmup_epochs = 0.5|warmup_epochs = 0.0632|'
done
distill_table meal-unlabelled "\"$NS/3\", \"$NS/1\"" 0.0 0 "{ lr = 1e-4, weight = 1.0 }" "unlabelled = true"
distill_table meal-no-disc-unlabelled "\"$NS/3\", \"$NS/1\"" 0.0 0 "" "unlabelled = true"
spawn after_student meal-unlabelled distill
spawn after_student meal-no-disc-unlabelled distill
# The same comparison at twice the compute: 16 epochs on labels against two passes over the
# 47,616 images (1,488 steps each).
variant control-2x -e "s|^seed = 3|seed = 4\ninit_from = \"$out/student\"|" -e 's|^epochs = 8|epochs = 16|'
sed 's|^epochs = 1$|epochs = 2|' "$out/configs/meal-unlabelled.toml" > "$out/configs/meal-unlabelled-2x.toml"
spawn after_student control-2x supervised
spawn after_student meal-unlabelled-2x distill

# The ablation, two at a time (with JOBS=2) once the runs above have started.
for v in $ABLATION; do
    case $v in kd | all) spawn train "$v" distill ;; *) spawn train "$v" supervised ;; esac
done
wait

# 3. Clean and corruption error (the 15 benchmark corruptions, severities 1-5).
[ -d "$FMNIST_C" ] || $H corrupt --data fashion-mnist:test --out "$FMNIST_C" --resize 28 --crop 28 --format png
evaluate() { # evaluate NAME MODEL
    [ -f "$out/eval/$1/result.json" ] ||
        $H eval --model "$2" --suite clean,c --data fashion-mnist:test --c-data "$FMNIST_C" \
            --limit "$LIMIT" --out "$out/eval/$1" > "$out/eval-$1.log" 2>&1
}
evaluate effnet-ns-3 "$NS/3"
evaluate effnet-ns-1 "$NS/1"
for r in student meal control meal-no-disc meal-unlabelled meal-no-disc-unlabelled control-2x meal-unlabelled-2x $ABLATION; do
    [ -f "$out/models/$r/1/model.onnx" ] || $H export "$out/$r" --out "$out/models/$r/1/model.onnx"
    evaluate "$r" "$out/models/$r/1"
done
python3 "$here/table.py" "$out" "$root" > "$out/results.md"
cat "$out/results.md"
