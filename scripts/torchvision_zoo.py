#!/usr/bin/env python3
"""Exports the torchvision classification zoo at random weights, with torch autograd's input
gradient, for the coverage test of Hardy's attack gradient (tests/integration/zoo.rs).

    PYTHONPATH=$(scripts/torch-env.sh) python3 scripts/torchvision_zoo.py OUTDIR

For each architecture that torch.onnx exports at opset 17 (one model per torchvision family:
ResNet, ResNeXt, Wide ResNet, DenseNet, MobileNet V2/V3, EfficientNet, RegNet, ShuffleNet V2,
SqueezeNet, MNASNet, GoogLeNet, ConvNeXt, ViT, Swin), built with `torch.manual_seed(0)`,
random weights and 10 classes, in eval mode, it writes to OUTDIR:

- NAME.onnx: `torch.onnx.export` (TorchScript exporter, opset 17, input `input`, output
  `logits`, dynamic batch);
- NAME.input.f32: a fixed random batch `x` in [0, 1], little-endian float32, NCHW;
- NAME.grad.f32: torch autograd's d/dx of sum(cross_entropy(model((x - mean) / std), labels)),
  labels being each image's least likely class (so the gradient is not ~0 at random weights);
- NAME.json: name, family, constructor (the Python expression that built the model), params,
  size, mean, std, labels, the per-image losses and the logits torch computed,
  export_error (null, or why the export failed: then no .onnx) and seconds (export and
  autograd);
- zoo.json: the list of models, in order.

Families whose smallest torchvision variant is above ~30M parameters (Wide ResNet, ViT) are
built from the same torchvision class with fewer blocks: the same operators, and the JSON's
`constructor` says so. ShuffleNet V2 comes three ways, as the issue's user report has it:
`shufflenet_v2` (dynamic batch), `shufflenet_v2_inferred` (the same file after
`onnx.shape_inference.infer_shapes`, value_info filled) and `shufflenet_v2_batch1` (a fixed
batch of 1, no dynamic axes; its input and gradient hold one image).
"""

import json
import os
import sys
import time
import traceback
import warnings

import onnx
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import resnet, vision_transformer

OPSET = 17
BATCH = 2
CLASSES = 10
SIZE = 64  # every model here accepts 64x64; none needed more
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

# (name, family, constructor): the constructor is evaluated with `torchvision`, `resnet` and
# `vision_transformer` in scope, so the JSON records exactly what was built.
MODELS = [
    ("resnet18", "ResNet", "torchvision.models.resnet18(weights=None, num_classes=10)"),
    ("resnext50_32x4d", "ResNeXt", "torchvision.models.resnext50_32x4d(weights=None, num_classes=10)"),
    (
        "wide_resnet",
        "Wide ResNet",
        # wide_resnet50_2 (69M parameters) with one Bottleneck per stage.
        "resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10)",
    ),
    ("densenet121", "DenseNet", "torchvision.models.densenet121(weights=None, num_classes=10)"),
    ("mobilenet_v2", "MobileNet V2", "torchvision.models.mobilenet_v2(weights=None, num_classes=10)"),
    (
        "mobilenet_v3_small",
        "MobileNet V3",
        "torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)",
    ),
    ("efficientnet_b0", "EfficientNet", "torchvision.models.efficientnet_b0(weights=None, num_classes=10)"),
    ("regnet_y_400mf", "RegNet", "torchvision.models.regnet_y_400mf(weights=None, num_classes=10)"),
    (
        "shufflenet_v2",
        "ShuffleNet V2",
        "torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)",
    ),
    ("squeezenet1_1", "SqueezeNet", "torchvision.models.squeezenet1_1(weights=None, num_classes=10)"),
    ("mnasnet0_5", "MNASNet", "torchvision.models.mnasnet0_5(weights=None, num_classes=10)"),
    (
        "googlenet",
        "GoogLeNet",
        "torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=False, init_weights=True)",
    ),
    ("convnext_tiny", "ConvNeXt", "torchvision.models.convnext_tiny(weights=None, num_classes=10)"),
    (
        "vit",
        "ViT",
        # vit_b_16 (86M parameters) with 2 layers, 2 heads, width 64, at 64x64.
        "vision_transformer.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, "
        "hidden_dim=64, mlp_dim=128, num_classes=10)",
    ),
    ("swin_t", "Swin", "torchvision.models.swin_t(weights=None, num_classes=10)"),
]


def write_f32(path, tensor):
    """Writes a tensor as raw little-endian float32."""
    data = tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4")
    with open(path, "wb") as f:
        f.write(data.tobytes())


def export(model, x, path, dynamic):
    """torch.onnx.export with the TorchScript exporter at opset 17."""
    kwargs = dict(
        opset_version=OPSET,
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
    )
    if dynamic:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, **kwargs)


def reference(model, x):
    """Labels (least likely class per image), per-image cross-entropy, logits and the pixel
    gradient of the summed cross-entropy, with the normalisation in front of the model."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        labels = model((x - mean) / std).argmin(dim=1)
    x = x.clone().requires_grad_(True)
    logits = model((x - mean) / std)
    losses = F.cross_entropy(logits, labels, reduction="none")
    losses.sum().backward()
    return labels, losses.detach(), logits.detach(), x.grad.detach()


def one(out, name, family, constructor, model, batch, dynamic, infer_from=None):
    """Exports one model and writes its reference files; returns its JSON record. With
    `infer_from` (an exported file), the model file is that file after onnx shape inference."""
    start = time.time()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, SIZE, SIZE, generator=generator)
    record = {
        "name": name,
        "family": family,
        "constructor": constructor,
        "params": sum(p.numel() for p in model.parameters()),
        "size": SIZE,
        "batch": batch,
        "dynamic_batch": dynamic,
        "shape_inference": infer_from is not None,
        "mean": MEAN,
        "std": STD,
        "export_error": None,
    }
    path = os.path.join(out, name + ".onnx")
    try:
        if infer_from is None:
            export(model, x, path, dynamic)
        else:
            # The user report: the same file with value_info filled by onnx's shape inference.
            onnx.save(onnx.shape_inference.infer_shapes(onnx.load(infer_from)), path)
    except Exception as e:  # an export failure is a result, not a crash
        record["export_error"] = f"{type(e).__name__}: {e}".strip()[:2000]
        traceback.print_exc(file=sys.stderr)
        if os.path.exists(path):
            os.remove(path)
    labels, losses, logits, grad = reference(model, x)
    record["labels"] = labels.tolist()
    record["losses"] = losses.tolist()
    record["logits"] = logits.flatten().tolist()
    write_f32(os.path.join(out, name + ".input.f32"), x)
    write_f32(os.path.join(out, name + ".grad.f32"), grad)
    record["seconds"] = round(time.time() - start, 3)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(record, f, indent=1)
    status = "export failed" if record["export_error"] else "ok"
    print(
        f"zoo: {name:<24} {record['params']:>11,} params  {record['seconds']:6.1f} s  {status}",
        file=sys.stderr,
    )
    return record


def zero_initialised_heads(model):
    """The linear layers of `model` whose weights are all zero (ViT's head)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.detach().abs().sum()]


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    # One thread: these models are tiny at 64 px, and on a busy 2-core CI machine OpenMP's
    # spinning threads made a ShuffleNet step 300 times slower than a single thread.
    torch.set_num_threads(1)
    scope = {"torchvision": torchvision, "resnet": resnet, "vision_transformer": vision_transformer}
    names = []
    total = time.time()
    for name, family, constructor in MODELS:
        torch.manual_seed(0)
        model = eval(constructor, scope).eval()  # noqa: S307 (our own constant expressions)
        for module in zero_initialised_heads(model):
            # torchvision starts these heads at zero: every logit 0, every pixel gradient 0,
            # which would compare nothing. Random weights, as the rest of the network has.
            torch.nn.init.normal_(module.weight, std=0.1)
        base = os.path.join(out, name + ".onnx")
        variants = [(name, BATCH, True, None)]
        if name == "shufflenet_v2":
            variants += [(name + "_inferred", BATCH, True, base), (name + "_batch1", 1, False, None)]
        for vname, batch, dynamic, infer_from in variants:
            if infer_from is not None and not os.path.exists(infer_from):
                continue  # the base export failed and is recorded
            one(out, vname, family, constructor, model, batch, dynamic, infer_from)
            names.append(vname)
    with open(os.path.join(out, "zoo.json"), "w") as f:
        json.dump(
            {
                "models": names,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "onnx": onnx.__version__,
                "opset": OPSET,
                "seconds": round(time.time() - total, 3),
            },
            f,
            indent=1,
        )
    print(f"zoo: {len(names)} models in {time.time() - total:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
