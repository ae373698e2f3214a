#!/usr/bin/env bash
# Makes the ImageNet-P video test data under eval/tests/data/perturb/ (run once; outputs are committed).
#
# Needs ffmpeg with libx264 (Debian: apt-get install ffmpeg; made with ffmpeg 5.1.x, libx264 164).
# The frames are a smooth colour gradient that moves from frame to frame (ffmpeg's `gradients`
# source), written as PNGs and encoded with the command of hendrycks/robustness
# ImageNet-P/create_p/make_imagenet_p.py (`-r 1 -framerate 1 -i img%01d.png -vcodec libx264
# -crf 20 -preset veryslow`), i.e. with B-frames:
#   clip_yuv420p.mp4  that command plus `-pix_fmt yuv420p` (what scikit-video's writer asks for):
#                     96x64, 12 frames, High profile 4:2:0; its frames decoded by ffmpeg to
#                     clip_yuv420p_NN.png (rgb24, ffmpeg's default unscaled conversion) are the
#                     reference the Rust reader is compared with.
#   clip_odd.mp4      like clip_yuv420p at 30x22 (not a multiple of the 16-px macroblock, so the
#                     SPS carries a cropping window), 3 frames, with clip_odd_NN.png.
#   clip_yuv444p.mp4  that command as is: for RGB PNG input ffmpeg picks yuv444p, profile
#                     "High 4:4:4 Predictive", like the released ImageNet-P videos; OpenH264
#                     cannot decode it, so Hardy reads it with ffmpeg. 6 frames of 64x48, a
#                     window moving 3 px right and 2 px down per frame over the corruption
#                     test photo (corrupt/tests/data/corrupt/input224.png), kept as
#                     clip_yuv444p_src_NN.png (the frames before encoding).
#   clip_lossless.mp4 clip_yuv444p re-encoded to 4:2:0 losslessly (`-qp 0`): still High 4:4:4
#                     Predictive (transform bypass), which OpenH264 cannot decode either.
# The last two were made with the static ffmpeg 7.0.2 of the PyPI imageio-ffmpeg 0.7.0 wheel
# (FFMPEG=~/.cache/hardy/imageio-ffmpeg-0.7.0/ffmpeg); the others with Debian's ffmpeg 5.1.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/eval/tests/data/perturb"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
q=(-hide_banner -loglevel error -y)

ffmpeg "${q[@]}" -f lavfi -i "gradients=s=96x64:c0=0x3050c0:c1=0xe0a040:c2=0x40c080:nb_colors=3:speed=0.08:rate=1:seed=7" \
    -frames:v 12 -pix_fmt rgb24 "$tmp/img%01d.png"
ffmpeg "${q[@]}" -r 1 -framerate 1 -i "$tmp/img%01d.png" -vcodec libx264 -crf 20 -preset veryslow \
    -pix_fmt yuv420p "$out/clip_yuv420p.mp4"
rm -f "$out"/clip_yuv420p_*.png
ffmpeg "${q[@]}" -i "$out/clip_yuv420p.mp4" -pix_fmt rgb24 -start_number 0 "$out/clip_yuv420p_%02d.png"

ffmpeg "${q[@]}" -f lavfi -i "gradients=s=30x22:speed=0.1:rate=1:seed=5" -frames:v 3 -pix_fmt rgb24 "$tmp/odd%01d.png"
ffmpeg "${q[@]}" -r 1 -framerate 1 -i "$tmp/odd%01d.png" -vcodec libx264 -crf 20 -preset veryslow \
    -pix_fmt yuv420p "$out/clip_odd.mp4"
rm -f "$out"/clip_odd_*.png
ffmpeg "${q[@]}" -i "$out/clip_odd.mp4" -pix_fmt rgb24 -start_number 0 "$out/clip_odd_%02d.png"

FFMPEG=${FFMPEG:-ffmpeg}
photo="$(cd "$(dirname "$0")/.." && pwd)/corrupt/tests/data/corrupt/input224.png"
rm -f "$out"/clip_yuv444p_src_*.png
for i in 0 1 2 3 4 5; do
    "$FFMPEG" "${q[@]}" -i "$photo" -vf "crop=64:48:$((80 + 3 * i)):$((60 + 2 * i))" -pix_fmt rgb24 \
        "$out/clip_yuv444p_src_0$i.png"
    cp "$out/clip_yuv444p_src_0$i.png" "$tmp/small$i.png"
done
"$FFMPEG" "${q[@]}" -r 1 -framerate 1 -i "$tmp/small%01d.png" -vcodec libx264 -crf 20 -preset veryslow \
    "$out/clip_yuv444p.mp4"

"$FFMPEG" "${q[@]}" -i "$out/clip_yuv444p.mp4" -pix_fmt yuv420p -c:v libx264 -qp 0 "$out/clip_lossless.mp4"

for clip in clip_yuv420p clip_odd clip_yuv444p clip_lossless; do
    ffprobe -v error -show_entries stream=codec_name,profile,pix_fmt,width,height,nb_frames,has_b_frames \
        -of compact "$out/$clip.mp4"
done
