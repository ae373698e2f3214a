"""PyTorch eager half of benches/train_step.sh: rebuilds the network the Rust benchmark
describes (JSON on stdin), checks the parameter count, and times the same training step
(batch, 28x28x1 input, soft cross-entropy with label smoothing 0.1, AdamW)."""
import json
import sys
import time

import torch
from torch import nn

spec = json.loads(sys.stdin.read())
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())


def conv_bn(i, o, k, s, groups=1, act=True):
    layers = [nn.Conv2d(i, o, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(o, eps=1e-3, momentum=0.1)]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class SE(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.reduce = nn.Conv2d(c, r, 1)
        self.expand = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, i, o, e, k, s):
        super().__init__()
        mid = i * e
        self.pw = conv_bn(i, mid, 1, 1) if e != 1 else nn.Identity()
        self.dw = conv_bn(mid, mid, k, s, groups=mid)
        self.se = SE(mid, max(1, int(i * spec["se_ratio"])))
        self.pwl = conv_bn(mid, o, 1, 1, act=False)
        self.skip = s == 1 and i == o

    def forward(self, x):
        h = self.pwl(self.se(self.dw(self.pw(x))))
        return h + x if self.skip else h


stem, stride = spec["stem"]
blocks = [conv_bn(1, stem, 3, stride)] + [MBConv(*b) for b in spec["blocks"]]
last = spec["blocks"][-1][1]
model = nn.Sequential(*blocks, conv_bn(last, spec["head"], 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Dropout(0.2), nn.Linear(spec["head"], 10))
params = sum(p.numel() for p in model.parameters())
assert params == spec["params"], f"PyTorch network has {params} parameters, burn's {spec['params']}"

batch, res = spec["batch"], spec["resolution"]
device = torch.device(spec.get("device", "cpu"))
model = model.to(device)
x = torch.randn(batch, 1, res, res, device=device)
y = torch.arange(batch, device=device) % 10
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
times = []
for step in range(12):
    t = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    loss.item()
    if step >= 2:
        times.append((time.perf_counter() - t) * 1e3)
times.sort()
where = f"CPU, {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
print(json.dumps({"framework": f"PyTorch {torch.__version__} eager ({where})",
                  "params": params, "median_ms": times[len(times) // 2]}))
