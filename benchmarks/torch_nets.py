"""PyTorch networks whose state_dicts have the published checkpoints' names and shapes: the torch side of the import checks.

Written for skd-tf from the architecture descriptions (ESPNet, Mehta et al. 2018, as the SKD reference code
configures it, skd_tf/models/espnet.py; the SKD reference PSPNet, skd_tf/models/skd_pspnet.py); ``benchmarks/import_reference.py`` checks them on the
authors' real checkpoints (they load strictly and agree with the authors' own network code). Imported only
where torch is installed.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin, cout, k, stride=1, dilation=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2 * dilation, dilation=dilation, bias=False)


class Conv(nn.Module):  # the reference code's C / CDilated: a module holding `conv`
    def __init__(self, cin, cout, k, stride=1, dilation=1):
        super().__init__()
        self.conv = _conv(cin, cout, k, stride, dilation)

    def forward(self, x):
        return self.conv(x)


class BnAct(nn.Module):  # BR
    def __init__(self, c):
        super().__init__()
        self.bn, self.act = nn.BatchNorm2d(c, eps=1e-3), nn.PReLU(c)

    def forward(self, x):
        return self.act(self.bn(x))


class ConvBnAct(BnAct):  # CBR
    def __init__(self, cin, cout, k, stride=1):
        super().__init__(cout)
        self.conv = _conv(cin, cout, k, stride)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Esp(nn.Module):
    """ESP module; ``down``: the strided first block of a level (DownSamplerB: bn/act directly on it)."""

    def __init__(self, cin, cout, down=False, add=True):
        super().__init__()
        n = cout // 5
        self.c1 = Conv(cin, n, 3 if down else 1, 2 if down else 1)
        for d in (1, 2, 4, 8, 16):
            setattr(self, f"d{d}", Conv(n, cout - 4 * n if d == 1 else n, 3, 1, d))
        self.down, self.add = down, add and not down
        if down:
            self.bn, self.act = nn.BatchNorm2d(cout, eps=1e-3), nn.PReLU(cout)
        else:
            self.bn = BnAct(cout)

    def forward(self, x):
        r = self.c1(x)
        outs = [self.d1(r)]
        acc = self.d2(r)
        outs.append(acc)
        for d in (4, 8, 16):
            acc = acc + getattr(self, f"d{d}")(r)
            outs.append(acc)
        y = torch.cat(outs, 1)
        if self.down:
            return self.act(self.bn(y))
        return self.bn(x + y if self.add else y)


class Pool(nn.Module):  # InputProjectionA
    def __init__(self, times):
        super().__init__()
        self.pool = nn.ModuleList([nn.AvgPool2d(3, 2, 1) for _ in range(times)])

    def forward(self, x):
        for p in self.pool:
            x = p(x)
        return x


class ESPNet(nn.Module):
    """ESPNet (``decoder``) or ESPNet-C; ``forward`` returns (logits, features)."""

    def __init__(self, classes, p=2, q=8, decoder=True):
        super().__init__()
        self.level1, self.sample1, self.sample2 = ConvBnAct(3, 16, 3, 2), Pool(1), Pool(2)
        self.b1 = BnAct(19)
        self.level2_0 = Esp(19, 64, down=True)
        self.level2 = nn.ModuleList([Esp(64, 64) for _ in range(p)])
        self.b2 = BnAct(131)
        self.level3_0 = Esp(131, 128, down=True)
        self.level3 = nn.ModuleList([Esp(128, 128) for _ in range(q)])
        self.b3 = BnAct(256)
        self.decoder = decoder
        if not decoder:
            self.classifier = Conv(256, classes, 1)
            return
        self.classifier_1 = Conv(256, classes, 1)
        self.level3_C = Conv(131, classes, 1)
        self.br = nn.BatchNorm2d(classes, eps=1e-3)
        self.conv = ConvBnAct(19 + classes, classes, 3)
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(classes, classes, 2, 2, bias=False))
        self.combine_l2_l3 = nn.Sequential(BnAct(2 * classes), Esp(2 * classes, classes, add=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(classes, classes, 2, 2, bias=False), BnAct(classes))
        self.classifier = nn.ConvTranspose2d(classes, classes, 2, 2, bias=False)

    def forward(self, x):
        out0 = self.b1(torch.cat([self.level1(x), self.sample1(x)], 1))
        out1_0 = self.level2_0(out0)
        out1 = out1_0
        for block in self.level2:
            out1 = block(out1)
        out1_cat = self.b2(torch.cat([out1, out1_0, self.sample2(x)], 1))
        out2_0 = self.level3_0(out1_cat)
        out2 = out2_0
        for block in self.level3:
            out2 = block(out2)
        features = self.b3(torch.cat([out2_0, out2], 1))
        if not self.decoder:
            return self.classifier(features), features
        up3 = self.up_l3(self.br(self.classifier_1(features)))
        merged = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_C(out1_cat), up3], 1)))
        return self.classifier(self.conv(torch.cat([merged, out0], 1))), features


def randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BatchNorm statistics (so that running stats, not 0/1, are tested); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif name.endswith("running_mean"):
                tensor.copy_(0.2 * torch.randn(tensor.shape, generator=gen))
            elif name.endswith("bn.weight") or name.endswith("br.weight") or (
                    tensor.dim() == 1 and name.endswith(".weight") and not name.endswith("act.weight")):
                tensor.copy_(0.8 + 0.4 * torch.rand(tensor.shape, generator=gen))
            elif name.endswith("act.weight"):
                tensor.copy_(0.1 + 0.3 * torch.rand(tensor.shape, generator=gen))
            else:
                fan_in = max(tensor[0].numel() if tensor.dim() > 1 else 1, 1)
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    return net.eval()


class ABN(nn.BatchNorm2d):
    """InPlaceABNSync: BatchNorm then leaky ReLU (slope 0.01); same tensors as a BatchNorm2d."""

    def forward(self, x):
        return nn.functional.leaky_relu(super().forward(x), 0.01)


class Block(nn.Module):
    """The SKD reference code's BasicBlock / Bottleneck (stride on the 3×3 convolution)."""

    def __init__(self, cin, planes, stride, dilation, bottleneck):
        super().__init__()
        out = planes * (4 if bottleneck else 1)
        self.bottleneck = bottleneck
        if bottleneck:
            self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilation, dilation, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        relu = nn.functional.relu
        y = relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            y = self.bn3(self.conv3(relu(self.bn2(self.conv2(y)))))
        else:
            y = self.bn2(self.conv2(y))
        return relu(y + (self.downsample(x) if self.downsample is not None else x))


class SkdPSPNet(nn.Module):
    """The SKD reference code's PSPNet (ResNet-18 student or ResNet-101 teacher); ``forward`` returns
    (logits, features, dsn logits)."""

    def __init__(self, depth, classes):
        super().__init__()
        bottleneck = depth >= 50
        blocks = {18: (2, 2, 2, 2), 101: (3, 4, 23, 3)}[depth]
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128)
        cin = 128
        for i, ((planes, stride, dilation), count) in enumerate(
                zip(((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)), blocks), start=1):
            layer = []
            for b in range(count):
                layer.append(Block(cin, planes, stride if b == 0 else 1, dilation, bottleneck))
                cin = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        width = 512 if bottleneck else 128
        self.pspmodule = nn.Module()
        self.pspmodule.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, width, 1, bias=False),
                                                             ABN(width)) for b in (1, 2, 3, 6)])
        self.pspmodule.bottleneck = nn.Sequential(nn.Conv2d(cin + 4 * width, width, 3, 1, 1, bias=False), ABN(width),
                                                  nn.Dropout2d(0.1))
        self.head = nn.Conv2d(width, classes, 1)
        self.dsn = nn.Sequential(nn.Conv2d(cin // 2, width, 3, 1, 1), ABN(width), nn.Dropout2d(0.1),
                                 nn.Conv2d(width, classes, 1))

    def forward(self, x):
        relu = nn.functional.relu
        x = relu(self.bn1(self.conv1(x)))
        x = relu(self.bn2(self.conv2(x)))
        x = relu(self.bn3(self.conv3(x)))
        x = nn.functional.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        x3 = self.layer3(self.layer2(self.layer1(x)))
        x4 = self.layer4(x3)
        h, w = x4.shape[2:]
        priors = [nn.functional.interpolate(stage(x4), (h, w), mode="bilinear", align_corners=True)
                  for stage in self.pspmodule.stages]
        features = self.pspmodule.bottleneck(torch.cat(priors + [x4], 1))
        return self.head(features), features, self.dsn(x3)
