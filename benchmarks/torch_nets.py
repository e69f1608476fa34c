"""PyTorch networks whose state_dicts have the published checkpoints' names and shapes: the torch side of the
import checks (tests/test_import.py, benchmarks/import_reference.py).

Written for skd-tf from the architecture descriptions (ESPNet as the SKD reference code configures it,
skd_tf/models/espnet.py; the SKD reference PSPNet, skd_tf/models/skd_pspnet.py; CIRKD's networks,
skd_tf/models/cirkd.py; torchvision's ResNet layout). Each gives logits bit-identical to the published code
with the same weights (checked against it; see docs/published-weights.md). Imported only where torch is installed.
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
    """torchvision-style BasicBlock / Bottleneck (stride on the 3×3 convolution); ``dilations``: of a
    BasicBlock's two 3×3 convolutions (a Bottleneck's one 3×3 takes the first) — CIRKD's
    (dilation, previous_dilation), the SKD code's (d, d)."""

    def __init__(self, cin, planes, stride, dilations, bottleneck):
        super().__init__()
        if isinstance(dilations, int):
            dilations = (dilations, dilations)
        out = planes * (4 if bottleneck else 1)
        self.bottleneck = bottleneck
        if bottleneck:
            self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilations[0], dilations[0], bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilations[0], dilations[0], bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilations[1], dilations[1], bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
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
        self.pspmodule.stages = nn.ModuleList([
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, width, 1, bias=False), ABN(width)) for b in (1, 2, 3, 6)])
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


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet-18/34/50/101 layout (7×7 stem, 3×3/2 max-pool, 64 stem channels, stride on the
    3×3 convolution, ``fc`` classifier): the ImageNet files ``model.pretrained`` reads for the ResNet
    backbones. ``forward`` returns layer4's map."""

    def __init__(self, depth, classes=1000):
        super().__init__()
        bottleneck = depth >= 50
        blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        cin = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            layer = []
            for b in range(count):
                layer.append(Block(cin, planes, 2 if b == 0 and i > 1 else 1, 1, bottleneck))
                cin = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(nn.functional.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _cbr(cin, cout, k, dilation=1):
    return [nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class CirkdNet(nn.Module):
    """CIRKD's DeepLabV3 or PSPNet on resnet{18,101}_v1s with the auxiliary FCN head; ``forward`` returns
    (logits, features, aux logits)."""

    def __init__(self, kind, depth, classes):
        super().__init__()
        bottleneck = depth >= 50
        self.pretrained = nn.Module()
        p = self.pretrained
        p.conv1, p.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        p.conv2, p.bn2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        p.conv3, p.bn3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128)
        cin = 128
        for i, ((planes, stride, dilation), count) in enumerate(
                zip(((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)), {18: (2, 2, 2, 2), 101: (3, 4, 23, 3)}[depth]),
                start=1):
            layer = []
            for b in range(count):
                dil = ({1: 1, 2: 1, 4: 2}[dilation], dilation) if b == 0 else (dilation, dilation)
                layer.append(Block(cin, planes, stride if b == 0 else 1, dil, bottleneck))
                cin = planes * (4 if bottleneck else 1)
            setattr(p, f"layer{i}", nn.Sequential(*layer))
        self.kind = kind
        self.head = nn.Module()
        if kind == "deeplabv3":
            aspp = nn.Module()
            aspp.b0 = nn.Sequential(*_cbr(cin, 512, 1))
            for i, rate in enumerate((12, 24, 36), start=1):
                branch = nn.Module()
                branch.block = nn.Sequential(*_cbr(cin, 512, 3, rate))
                setattr(aspp, f"b{i}", branch)
            aspp.b4 = nn.Module()
            aspp.b4.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_cbr(cin, 512, 1))
            aspp.project = nn.Sequential(*_cbr(5 * 512, 512, 1), nn.Dropout(0.5))
            self.head.aspp = aspp
            self.head.block = nn.Sequential(*_cbr(512, 512, 3), nn.Dropout(0.1), nn.Conv2d(512, classes, 1))
        else:
            self.head.psp = nn.Module()
            for i in range(1, 5):
                setattr(self.head.psp, f"conv{i}", nn.Sequential(*_cbr(cin, cin // 4, 1)))
            width = 128 if depth < 50 else 256
            self.head.block = nn.Sequential(*_cbr(2 * cin, width, 3), nn.Dropout(0.1))
            self.head.classifier = nn.Conv2d(width, classes, 1)
        self.auxlayer = nn.Module()
        self.auxlayer.block = nn.Sequential(*_cbr(cin // 2, cin // 8, 3), nn.Dropout(0.1),
                                            nn.Conv2d(cin // 8, classes, 1))

    def forward(self, x):
        p, relu = self.pretrained, nn.functional.relu
        x = relu(p.bn1(p.conv1(x)))
        x = relu(p.bn2(p.conv2(x)))
        x = relu(p.bn3(p.conv3(x)))
        x3 = p.layer3(p.layer2(p.layer1(nn.functional.max_pool2d(x, 3, 2, 1))))
        x4 = p.layer4(x3)
        size = x4.shape[2:]
        up = lambda t: nn.functional.interpolate(t, size, mode="bilinear", align_corners=True)  # noqa: E731
        if self.kind == "deeplabv3":
            a = self.head.aspp
            y = torch.cat([a.b0(x4), a.b1.block(x4), a.b2.block(x4), a.b3.block(x4), up(a.b4.gap(x4))], 1)
            features = self.head.block[0:4](a.project(y))
            logits = self.head.block[4](features)
        else:
            pooled = [up(getattr(self.head.psp, f"conv{i}")(nn.functional.adaptive_avg_pool2d(x4, b)))
                      for i, b in zip(range(1, 5), (1, 2, 3, 6))]
            features = self.head.block(torch.cat([x4] + pooled, 1))
            logits = self.head.classifier(features)
        return logits, features, self.auxlayer.block(x3)
