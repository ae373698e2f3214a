#!/usr/bin/env python3
"""Reference frames for the ImageNet-P generator (corrupt/src/perturb), made once and committed.

Follows hendrycks/robustness ImageNet-P/create_p/make_imagenet_p.py with the libraries it calls:
PIL's affine transform with torchvision 0.2's inverse matrix (transcribed below, so torch is not
needed), OpenCV's warpPerspective for tilt, scikit-image's rgb2hsv/hsv2rgb and gaussian.

The input is a synthetic 72x68 picture (smooth gradients, rectangles, a disc, mild noise; seeded)
and the output size is 64 instead of 224, so that the PNGs stay small; translate's shift and
gaussian_blur's sigma are scaled by 64/224 as the Rust generator does at that size.

Usage: python3 scripts/make_perturb_reference.py   (pip install numpy pillow opencv-python-headless
scikit-image; made with numpy 2.4.6, Pillow 13.0.0, OpenCV 5.0.0, scikit-image 0.26.0)
"""
import math
import os

import cv2
import numpy as np
import skimage.color as skcolor
from PIL import Image
from skimage.filters import gaussian

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corrupt", "tests", "data", "perturb", "reference")
W, H, CROP = 72, 68, 64
S = CROP / 224.0


def synthetic():
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.stack([xx / W, yy / H, 0.5 + 0.5 * np.sin(xx / 7.0 + yy / 11.0)], axis=-1) * 200 + 20
    img[10:30, 12:40] = [230, 40, 60]
    img[40:60, 45:66] = [30, 160, 220]
    img[(xx - 50) ** 2 + (yy - 20) ** 2 < 90] = [250, 240, 90]
    img += rng.normal(0, 6, img.shape)
    return np.uint8(np.clip(img, 0, 255))


def center_crop(pil, size):
    w, h = pil.size
    i = int(round((h - size) / 2.0))
    j = int(round((w - size) / 2.0))
    return pil.crop((j, i, j + size, i + size))


def inverse_affine_matrix(center, angle, translate, scale, shear):
    # torchvision 0.2.1 transforms.functional._get_inverse_affine_matrix
    angle = math.radians(angle)
    shear = math.radians(shear)
    scale = 1.0 / scale
    d = math.cos(angle + shear) * math.cos(angle) + math.sin(angle + shear) * math.sin(angle)
    matrix = [math.cos(angle + shear), math.sin(angle + shear), 0, -math.sin(angle), math.cos(angle), 0]
    matrix = [scale / d * m for m in matrix]
    matrix[2] += matrix[0] * (-center[0] - translate[0]) + matrix[1] * (-center[1] - translate[1])
    matrix[5] += matrix[3] * (-center[0] - translate[0]) + matrix[4] * (-center[1] - translate[1])
    matrix[2] += center[0]
    matrix[5] += center[1]
    return matrix


def affine(pil, angle=0.0, translate=(0, 0), scale=1.0, shear=0.0, resample=Image.NEAREST):
    # torchvision 0.2.1 F.affine: output_size = img.size, center = (w * 0.5 + 0.5, h * 0.5 + 0.5)
    center = (pil.size[0] * 0.5 + 0.5, pil.size[1] * 0.5 + 0.5)
    m = inverse_affine_matrix(center, angle, translate, scale, shear)
    return pil.transform(pil.size, Image.AFFINE, m, resample)


def tilt_matrix(w, h, deg):
    phi, theta = np.deg2rad(deg), np.deg2rad(deg)
    f = np.sqrt(w ** 2 + h ** 2)
    P1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    RX = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0], [0, 0, 0, 1]])
    RY = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0], [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    T = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    P2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    return P2 @ T @ RX @ RY @ P1


def brightness(x, c):
    x = np.array(x, copy=True) / 255.0
    x = skcolor.rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.uint8(skcolor.hsv2rgb(x) * 255)


def main():
    os.makedirs(OUT, exist_ok=True)
    arr = synthetic()
    img = Image.fromarray(arr)
    img.save(os.path.join(OUT, "input.png"))

    def save(name, frame):
        Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(os.path.join(OUT, name + ".png"))

    for i in (0, 7, 33, 40):
        save(f"translate_{i:02}", center_crop(affine(img, translate=((i - 20) * S, 0)), CROP))
    for i in (0, 8, 30):
        save(f"rotate_{i:02}", center_crop(affine(img, angle=i - 15, resample=Image.BILINEAR), CROP))
    for i in (0, 30):
        save(f"shear_{i:02}", center_crop(affine(img, shear=i - 15, resample=Image.BILINEAR), CROP))
    for i in (0, 12, 30):
        save(f"scale_{i:02}", center_crop(affine(img, scale=(i * 2.5 + 40) / 100.0, resample=Image.BILINEAR), CROP))
    # zoom_blur: running mean of ToTensor() (float32) frames, ToPILImage() truncates.
    avg = np.asarray(center_crop(img, CROP), dtype=np.float32) / np.float32(255)
    for i in range(1, 31):
        z = center_crop(affine(img, scale=1 + 0.004 * i, resample=Image.BILINEAR), CROP)
        avg += np.asarray(z, dtype=np.float32) / np.float32(255)
        if i in (1, 30):
            save(f"zoom_blur_{i:02}", (avg / np.float32(i + 1) * np.float32(255)).astype(np.uint8))
    for i in (0, 30):
        mat = tilt_matrix(W, H, i - 15)
        save(f"tilt_{i:02}", center_crop(Image.fromarray(cv2.warpPerspective(arr, mat, (W, H))), CROP))
    crop = center_crop(img, CROP)
    for i in (0, 30):
        save(f"brightness_{i:02}", brightness(crop, (i - 15) * 2 / 100.0))
    for i in (0, 30):
        sigma = (0.25 + 0.035 * i) * S
        blurred = gaussian(np.array(crop, copy=True) / 255.0, sigma=sigma, channel_axis=-1, truncate=6.0)
        save(f"gaussian_blur_{i:02}", np.uint8(255 * blurred))


if __name__ == "__main__":
    main()
