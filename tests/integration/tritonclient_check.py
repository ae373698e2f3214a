"""Drive a running `hardy serve` with NVIDIA's unmodified Triton HTTP client.

Run by tests/integration/tritonclient.rs, which installs `tritonclient[http]` from PyPI into
Hardy's cache and starts the server. Usage:

    python3 tritonclient_check.py HOST:PORT MODEL ADMIN_TOKEN SAMPLES_DIR MEAN STD

Every check is an assert; the script prints one line per check and exits non-zero on the
first failure.
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient_common import check, load_samples, png_gray_pixels, slug
from tritonclient.utils import InferenceServerException

url, model, token, samples_dir = sys.argv[1:5]
auth = {"Authorization": f"Bearer {token}"}
samples, expected = load_samples(samples_dir)


client = httpclient.InferenceServerClient(url=url)
check("server live", client.is_server_live())
check("server ready", client.is_server_ready())
meta = client.get_server_metadata()
check("server metadata", meta["name"] == "hardy" and "classification" in meta["extensions"], meta)
check("model ready", client.is_model_ready(model))
mm = client.get_model_metadata(model)
inp, out = mm["inputs"][0], mm["outputs"][0]
check("model metadata", inp["datatype"] == "FP32" and out["datatype"] == "FP32", mm)
shape = inp["shape"][1:]  # [C, H, W]

# Encoded images as a BYTES tensor (binary), top-3 via the classification extension.
pngs = [p.read_bytes() for p in samples]
images = np.array(pngs, dtype=np.object_)
bytes_in = httpclient.InferInput(inp["name"], [len(pngs)], "BYTES")
bytes_in.set_data_from_numpy(images, binary_data=True)
result = client.infer(
    model,
    [bytes_in],
    outputs=[httpclient.InferRequestedOutput(out["name"], binary_data=True, class_count=3)],
)
top = result.as_numpy(out["name"])
check("classification shape", top.shape == (len(pngs), 3), top.shape)
labels = [slug(row[0].decode().split(":", 2)[2]) for row in top]
check("classification labels", labels == expected, f"{labels} vs {expected}")

# The same images' logits (binary output), then as FP32 tensors we preprocess ourselves.
result = client.infer(
    model, [bytes_in], outputs=[httpclient.InferRequestedOutput(out["name"], binary_data=True)]
)
logits_bytes = result.as_numpy(out["name"])
check("logits shape", logits_bytes.shape == (len(pngs), out["shape"][1]), logits_bytes.shape)
check("logits argmax", list(logits_bytes.argmax(1)) == [int(r[0].decode().split(":")[1]) for r in top])

# UINT8 pixels [N, H, W, C]: the server normalises them.
pixels = np.stack([png_gray_pixels(p) for p in pngs])[..., None]  # [N, 28, 28, 1]
u8_in = httpclient.InferInput(inp["name"], list(pixels.shape), "UINT8")
u8_in.set_data_from_numpy(pixels, binary_data=True)
logits_u8 = client.infer(model, [u8_in]).as_numpy(out["name"])
diff = float(np.abs(logits_u8 - logits_bytes).max())
check("UINT8 pixels match encoded images", diff < 1e-4, f"max |diff| {diff:.2e}")

# FP32, normalised here with the model's mean and std (passed in by the Rust test).
mean, std = float(sys.argv[5]), float(sys.argv[6])
fp32 = ((pixels.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy()
check("FP32 shape", list(fp32.shape[1:]) == shape, fp32.shape)
for binary in (True, False):
    x = httpclient.InferInput(inp["name"], list(fp32.shape), "FP32")
    x.set_data_from_numpy(fp32, binary_data=binary)
    logits = client.infer(
        model, [x], outputs=[httpclient.InferRequestedOutput(out["name"], binary_data=binary)]
    ).as_numpy(out["name"])
    diff = float(np.abs(logits - logits_bytes).max())
    check(f"FP32 ({'binary' if binary else 'JSON'}) matches", diff < 1e-4, f"max |diff| {diff:.2e}")

# A wrong shape is an InferenceServerException with the server's message.
bad = httpclient.InferInput(inp["name"], [1, 3, 5, 5], "FP32")
bad.set_data_from_numpy(np.zeros((1, 3, 5, 5), np.float32), binary_data=True)
try:
    client.infer(model, [bad])
    check("wrong shape rejected", False, "no error")
except InferenceServerException as e:
    check("wrong shape rejected", "[1, 3, 5, 5]" in str(e), str(e))

# The model configuration extension.
config = client.get_model_config(model)
check(
    "model config",
    config["name"] == model
    and config["max_batch_size"] == mm["parameters"]["max_batch_size"]
    and config["input"][0]["dims"] == shape,
    config,
)

# The statistics extension: 5 answered requests of N images each, and the failed one.
stats = client.get_inference_statistics(model)["model_stats"]
check("statistics: one version", len(stats) == 1 and stats[0]["name"] == model, stats)
st = stats[0]
counts = st["inference_stats"]
check("statistics: images", st["inference_count"] == 5 * len(pngs), st["inference_count"])
check("statistics: requests", counts["success"]["count"] == 5, counts["success"])
check("statistics: failures", counts["fail"]["count"] == 1, counts["fail"])
runs = sum(b["compute_infer"]["count"] for b in st["batch_stats"])
check("statistics: runs", runs == st["execution_count"] and runs >= 5, st["batch_stats"])

# The repository extension, with the bearer token in the headers.
index = client.get_model_repository_index(headers=auth)
check("repository index", any(m["name"] == model and m["state"] == "READY" for m in index), index)
client.unload_model(model, headers=auth)
check("unloaded", not client.is_model_ready(model))
client.load_model(model, headers=auth)
check("loaded again", client.is_model_ready(model))
try:
    client.get_model_repository_index()
    check("index without token refused", False, "no error")
except InferenceServerException as e:
    check("index without token refused", "token" in str(e), str(e))
client.close()
print("all tritonclient checks passed")
