"""What the peer servers of benches/peers.sh share: the ONNX Runtime session, and the
preprocessing `hardy serve` applies to the same model, read from the same place.

Hardy resolves a model's settings field by field from built-in defaults (ImageNet at 224 px),
then the ONNX file's `hardy.config` metadata entry (TOML), then a `config.toml` beside
`model.onnx` (models/README.md); `hardy inspect DIR` prints the result. `ModelConfig` does the
same for the fields preprocessing and ranking need, and `preprocess` is torchvision's
evaluation transform on a PIL image, which is what engine/src/preprocess.rs reproduces
(tests/data/parity): decode (EXIF orientation applied when `exif_orientation`), RGB,
`Resize(resize_size)` on the shorter side with PIL's filter, `CenterCrop`, then
`convert("L")` for gray models, `ToTensor` + `Normalize` in float32, NCHW or NHWC.
"""

import argparse
import io
import math
import os
import re
import sys
import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

# torchvision's Resize and CenterCrop on PIL images, as the parity references of Hardy's
# preprocessing make them (one copy of that arithmetic in Python).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from make_parity_reference import torchvision_center_crop, torchvision_resize  # noqa: E402

DEFAULTS = {
    "resolution": 224,
    "crop": None,
    "resize_size": None,
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "color": "rgb",
    "layout": "nchw",
    "exif_orientation": True,
}
FILTERS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}


def model_file(path):
    """`path` as Hardy opens it: an .onnx file, a model directory (its highest version
    directory), or a version directory. Returns the .onnx file."""
    if os.path.isfile(path):
        return path
    if os.path.isfile(os.path.join(path, "model.onnx")):
        return os.path.join(path, "model.onnx")
    versions = [d for d in os.listdir(path) if re.fullmatch(r"[1-9][0-9]*", d)]
    if not versions:
        raise SystemExit(f"{path}: no model.onnx and no version directory")
    return os.path.join(path, max(versions, key=int), "model.onnx")


def server_parser(doc):
    """The options of the FastAPI and LitServe servers (KServe's are named apart from its own)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="model directory, version directory or .onnx file")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=threads_from_env(), help="ORT intra-op threads")
    return parser


def threads_from_env(default=2):
    return int(os.environ.get("PEERS_INTRA_THREADS", default))


def session(onnx_path, intra_threads):
    """One CPU session: `intra_threads` intra-op threads (Hardy's --intra-threads), one
    inter-op thread, sequential execution."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


class ModelConfig:
    """The settings Hardy resolves for a model: defaults < `hardy.config` < config.toml."""

    def __init__(self, onnx_path, sess):
        table = {}
        meta = sess.get_modelmeta().custom_metadata_map.get("hardy.config")
        layers = [tomllib.loads(meta)] if meta else []
        beside = os.path.join(os.path.dirname(onnx_path), "config.toml")
        if os.path.isfile(beside):
            with open(beside, "rb") as f:
                layers.append(tomllib.load(f))
        pre = dict(DEFAULTS)
        for layer in layers:
            for key, value in layer.items():
                if key != "preprocess":
                    table[key] = value
            pre.update(layer.get("preprocess", {}))
        self.input_name = table.get("input_name", sess.get_inputs()[0].name)
        self.output_name = table.get("output_name", sess.get_outputs()[0].name)
        labels = table.get("labels")
        if labels is None and "labels_file" in table:
            with open(os.path.join(os.path.dirname(onnx_path), table["labels_file"])) as f:
                labels = [line.rstrip("\n") for line in f if line.strip()]
        self.labels = labels
        if pre["crop"] is not None:
            self.crop_h, self.crop_w = (int(v) for v in pre["crop"])
        else:
            self.crop_h = self.crop_w = int(pre["resolution"])
        if pre["resize_size"] is not None:
            self.resize_size = int(pre["resize_size"])
        else:
            # Hardy: (min(crop) as f64 / crop_pct as f32 as f64).floor()
            self.resize_size = math.floor(min(self.crop_h, self.crop_w) / float(np.float32(pre["crop_pct"])))
        self.interpolation = pre["interpolation"]
        self.filter = FILTERS[self.interpolation]
        self.mean = np.asarray(pre["mean"], dtype=np.float32)
        self.std = np.asarray(pre["std"], dtype=np.float32)
        self.gray = pre["color"] == "gray"
        self.nchw = pre["layout"] == "nchw"
        self.exif = bool(pre["exif_orientation"])

    def describe(self):
        return (
            f"resize shorter side to {self.resize_size}, centre-crop {self.crop_h}x{self.crop_w}, "
            f"{self.interpolation}, {'gray' if self.gray else 'rgb'} {'nchw' if self.nchw else 'nhwc'}, "
            f"mean {self.mean.tolist()}, std {self.std.tolist()}"
        )

    def preprocess(self, data):
        """Encoded image bytes to one float32 tensor without the batch axis."""
        img = Image.open(io.BytesIO(data))
        if self.exif:
            img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        img = torchvision_center_crop(torchvision_resize(img, self.resize_size, self.filter), self.crop_h, self.crop_w)
        if self.gray:
            img = img.convert("L")
        x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
        if x.ndim == 2:
            x = x[:, :, None]
        x = (x - self.mean) / self.std
        if self.nchw:
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def top_k(self, logits, k=5):
        """Softmax probabilities of the k highest logits, as Hardy's classify answer."""
        logits = np.asarray(logits, dtype=np.float64)
        e = np.exp(logits - logits.max())
        p = e / e.sum()
        order = np.argsort(-logits, kind="stable")[:k]
        return [
            {
                "index": int(i),
                "label": self.labels[i] if self.labels and i < len(self.labels) else str(i),
                "score": float(p[i]),
            }
            for i in order
        ]


class Classifier:
    """A session and its model's settings."""

    def __init__(self, model_path, intra_threads):
        self.path = model_file(model_path)
        self.session = session(self.path, intra_threads)
        self.config = ModelConfig(self.path, self.session)

    def run(self, batch):
        """float32 [N, ...] to logits [N, classes]."""
        return self.session.run([self.config.output_name], {self.config.input_name: batch})[0]

    def classify(self, images, k=5):
        batch = np.stack([self.config.preprocess(data) for data in images])
        return [self.config.top_k(row, k) for row in self.run(batch)]

    def warm_up(self, batch=1):
        """One run of `batch` zero images, so the first request does not pay for ORT's first run."""
        c = 1 if self.config.gray else 3
        h, w = self.config.crop_h, self.config.crop_w
        self.run(np.zeros((batch, c, h, w) if self.config.nchw else (batch, h, w, c), dtype=np.float32))
