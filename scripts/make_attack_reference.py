#!/usr/bin/env python3
"""Makes the torch.onnx reference data for eval's attack tests (eval/tests/attack.rs).

For small, width-reduced, random-weight versions of torchvision's ResNet, MobileNetV2,
MobileNetV3 and EfficientNet (the torchvision building blocks, so the exported operators are
those of the full models), at 32x32, it writes under eval/tests/data/attack/torch/:

- <name>.onnx: torch.onnx.export of the model in eval mode (opset 18, dynamic batch);
- <name>.pixels.bin, <name>.grad.bin, <name>.logits.bin: little-endian float32 pixels in
  [0, 1], torch autograd's d(sum of cross-entropies)/d(pixels) with ImageNet normalisation
  inside the graph, and the logits;
- manifest.json: names, shapes, labels, mean/std, torch version.

Needs torch, torchvision, onnx, onnxscript (a CPU-only venv is enough):
    python -m venv /tmp/venv && /tmp/venv/bin/pip install torch torchvision onnx onnxscript
    /tmp/venv/bin/python scripts/make_attack_reference.py
"""

import json
import os

import onnx
import torch
import torchvision
from torch import nn
from torchvision.models import efficientnet, mobilenetv2, mobilenetv3, resnet

OUT = os.path.join(os.path.dirname(__file__), "..", "eval", "tests", "data", "attack", "torch")
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
RES = 32
BATCH = 2
CLASSES = 10


class SmallResNet(resnet.ResNet):
    """torchvision's ResNet (BasicBlock, [1, 1, 1, 1]) with widths 8, 8, 16, 16."""

    def __init__(self):
        super().__init__(resnet.BasicBlock, [1, 1, 1, 1], num_classes=CLASSES)
        widths = [8, 8, 16, 16]
        norm = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(widths[0])
        self.layer1 = self._make_layer(resnet.BasicBlock, widths[0], 1)
        self.layer2 = self._make_layer(resnet.BasicBlock, widths[1], 1, stride=2)
        self.layer3 = self._make_layer(resnet.BasicBlock, widths[2], 1, stride=2)
        self.layer4 = self._make_layer(resnet.BasicBlock, widths[3], 1, stride=2)
        self.fc = nn.Linear(widths[3], CLASSES)


def mobilenet_v2():
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2]]
    m = mobilenetv2.MobileNetV2(num_classes=CLASSES, width_mult=0.5, inverted_residual_setting=setting)
    # The 1280-channel head of the full model is just another 1x1 conv; keep it small.
    last = m.features[-1]
    m.features[-1] = torchvision.ops.Conv2dNormActivation(
        last[0].in_channels, 64, kernel_size=1, activation_layer=nn.ReLU6
    )
    m.classifier[-1] = nn.Linear(64, CLASSES)
    return m


def mobilenet_v3():
    setting, _ = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    return mobilenetv3.MobileNetV3(setting[:5], last_channel=64, num_classes=CLASSES)


def efficientnet_b0():
    setting, _ = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return efficientnet.EfficientNet(setting[:4], dropout=0.2, num_classes=CLASSES, last_channel=64)


# name -> (constructor, exporter): "dynamo" is torch.onnx's default (torch.export, opset 18,
# BatchNorm folded, pooling as ReduceMean, flatten as Reshape); "legacy" the TorchScript
# exporter without constant folding (BatchNormalization, GlobalAveragePool, Flatten kept).
MODELS = {
    "resnet": (SmallResNet, "dynamo"),
    "mobilenet_v2": (mobilenet_v2, "dynamo"),
    "mobilenet_v3": (mobilenet_v3, "dynamo"),
    "efficientnet": (efficientnet_b0, "dynamo"),
    "resnet_legacy": (SmallResNet, "legacy"),
    "mobilenet_v3_legacy": (mobilenet_v3, "legacy"),
}


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    manifest = {"torch": torch.__version__, "torchvision": torchvision.__version__, "mean": MEAN, "std": STD,
                "models": []}
    for name, (make, exporter) in MODELS.items():
        model = make().eval()
        with torch.no_grad():
            randomise_bn(model, gen)
        params = sum(p.numel() for p in model.parameters())
        x = torch.randn(BATCH, 3, RES, RES)
        path = os.path.join(OUT, f"{name}.onnx")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"], opset_version=18,
                              dynamic_shapes={"x": {0: batch}}, external_data=False)
        else:
            torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"], opset_version=17,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False,
                              do_constant_folding=False)
        # Drop the exporter's per-node provenance (stack traces): it is most of the file.
        proto = onnx.load(path)
        for n in proto.graph.node:
            del n.metadata_props[:]
            n.doc_string = ""
        onnx.save(proto, path)
        pixels = torch.rand(BATCH, 3, RES, RES, generator=gen).requires_grad_(True)
        labels = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        logits = model((pixels - mean) / std)
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, pixels)
        for kind, t in (("pixels", pixels), ("grad", grad), ("logits", logits)):
            t.detach().numpy().astype("<f4").tofile(os.path.join(OUT, f"{name}.{kind}.bin"))
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        manifest["models"].append({"name": name, "shape": [BATCH, 3, RES, RES], "classes": CLASSES,
                                   "labels": labels.tolist(), "parameters": params, "exporter": exporter, "ops": ops})
        print(name, params, "parameters", os.path.getsize(path), "bytes", ops)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f)
        f.write("\n")


if __name__ == "__main__":
    main()
