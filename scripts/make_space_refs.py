#!/usr/bin/python3
"""make_space_refs.py: PyTorch parameter and MAC counts of search-space members, for
tests/test_space.c (tests/ref/space_counts.txt).

Run with Debian's interpreter (python3-torch 1.13), from the repository root, after `make`:
    /usr/bin/python3 scripts/make_space_refs.py [build/tests/test_space] > tests/ref/space_counts.txt
PyTorch is only a tool for making the file: it is committed, and the C test reads it without Python.

The members come from nasc: `build/tests/test_space --print-members` prints random members drawn
with fixed seeds, one per line: "space channels cells arch CxHxW classes". This script builds
each one as ordinary torch nn.Modules written here from the arch string and the space's settings
(it never reads nasc spec text) and appends two numbers to the line:
    params  every trainable value (sum of p.numel(), BN affine included)
    macs    multiply-accumulates of Conv2d and Linear layers for one image, from forward hooks
            (conv: Hout*Wout*Cout*(Cin/groups)*Kh*Kw; linear: in*out), as bench/torch_ref.py counts.

NB201 cells are NB201's TinyNetwork (scripts/make_refs.py) with `channels` and `cells`.
Macro members follow src/space/macro.c's documented network; the space field is "macro" (the
defaults below) or "macro:KEY=VAL,..." (the same inline syntax, parsed here).
"""
import os
import re
import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_refs import TinyNetwork  # noqa: E402  (NB201's network, written from its paper/code)

# ----------------------------------------------------------------------------- macro space
MACRO_DEFAULTS = {
    "channels": ["16", "24", "40", "80"], "depth": ["2", "3", "4"], "kernel": ["3", "5", "7"],
    "expand": ["1", "3", "4", "6"], "se": ["0", "1"], "width": ["0.5", "0.75", "1.0"],
    "res": ["20", "24", "28"], "stem": ["16"], "stem_stride": ["1"], "stem_act": ["relu6"],
    "head": ["256"], "head_act": ["hswish"],
}


def macro_config(space):
    """The settings of a macro space name: defaults, then "macro:KEY=VAL,..." items (an item
    without '=' adds a value to the previous key)."""
    given = {}
    if space != "macro":
        assert space.startswith("macro:"), space
        key = None
        for item in space[6:].split(","):
            if "=" in item:
                key, val = item.split("=", 1)
                given[key] = [val]
            else:
                given[key].append(item)
    cfg = dict(MACRO_DEFAULTS)
    cfg.update(given)
    n = len(cfg["channels"])
    # Stage-count defaults: stride 1 then 2; relu6 for the first half of the stages, hswish after.
    cfg.setdefault("strides", ["1"] + ["2"] * (n - 1))
    cfg.setdefault("acts", ["relu6" if s < n // 2 else "hswish" for s in range(n)])
    for k in ("strides", "acts"):
        if len(cfg[k]) == 1:
            cfg[k] = cfg[k] * n
    return cfg


def make_divisible(v, d=8):
    """MobileNet's rounding: nearest multiple of d, at least d, not below 90% of v."""
    nv = max(d, int(v + d / 2) // d * d)
    if nv < 0.9 * v:
        nv += d
    return nv


ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        sq = make_divisible(c / 4)
        self.reduce = nn.Conv2d(c, sq, 1, bias=True)
        self.expand = nn.Conv2d(sq, c, 1, bias=True)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))


class MBBlock(nn.Module):
    """Inverted residual: [1x1 expand + BN + act] depthwise kxk + BN + act [SE] 1x1 project + BN."""

    def __init__(self, cin, cout, k, e, se, stride, act):
        super().__init__()
        mid = cin if e == 1 else make_divisible(cin * e)
        layers = []
        if e != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), ACTS[act]()]
        layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), ACTS[act]()]
        if se:
            layers.append(SqueezeExcite(mid))
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MacroNet(nn.Module):
    def __init__(self, cfg, arch, cin, classes):
        super().__init__()
        m = re.fullmatch(r"macro:r(\d+):w([0-9.eE+-]+):(.*)", arch)
        assert m, arch
        self.res = int(m.group(1))
        w = float(m.group(2))
        stages = m.group(3).split("|")
        assert len(stages) == len(cfg["channels"]), arch
        assert self.res in [int(v) for v in cfg["res"]] and any(abs(w - float(v)) < 1e-6 for v in cfg["width"])
        c = make_divisible(int(cfg["stem"][0]) * w)
        layers = [nn.Conv2d(cin, c, 3, int(cfg["stem_stride"][0]), 1, bias=False), nn.BatchNorm2d(c),
                  ACTS[cfg["stem_act"][0]]()]
        for s, text in enumerate(stages):
            active = text.split("/")[0]  # blocks after '/' are inactive settings
            cout = make_divisible(int(cfg["channels"][s]) * w)
            for b, blk in enumerate(active.split(",")):
                bm = re.fullmatch(r"k(\d+)e(\d+)(se)?", blk)
                assert bm, blk
                stride = int(cfg["strides"][s]) if b == 0 else 1
                layers.append(MBBlock(c, cout, int(bm.group(1)), int(bm.group(2)), bm.group(3) is not None, stride,
                                      cfg["acts"][s]))
                c = cout
        head = int(cfg["head"][0])
        if head > 0:
            h = make_divisible(head * w)
            layers += [nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), ACTS[cfg["head_act"][0]]()]
            c = h
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        if self.res > 0:
            x = F.interpolate(x, size=(self.res, self.res), mode="bilinear", align_corners=False)
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


# ----------------------------------------------------------------------------- counting
def count(model, in_shape):
    macs = [0]

    def conv_hook(m, i, o):
        kh, kw = m.kernel_size
        macs[0] += o.shape[2] * o.shape[3] * m.out_channels * (m.in_channels // m.groups) * kh * kw

    def fc_hook(m, i, o):
        macs[0] += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *in_shape))
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), macs[0]


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "build/tests/test_space"
    lines = subprocess.run([binary, "--print-members"], check=True, capture_output=True, text=True).stdout
    torch.manual_seed(0)
    print("# tests/ref/space_counts.txt: written by scripts/make_space_refs.py (PyTorch %s) from the members"
          % torch.__version__)
    print("# that build/tests/test_space --print-members draws. Fields: space channels cells arch CxHxW classes"
          " params macs")
    n = 0
    for line in lines.splitlines():
        space, channels, cells, arch, shape, classes = line.split()
        channels, cells, classes = int(channels), int(cells), int(classes)
        in_shape = tuple(int(v) for v in shape.split("x"))
        if space == "nb201":
            assert arch.startswith("nb201:")
            model = TinyNetwork(arch[6:], in_shape[0], channels, cells, classes)
        else:
            model = MacroNet(macro_config(space), arch, in_shape[0], classes)
        params, macs = count(model, in_shape)
        print("%s %d %d %s %s %d %d %d" % (space, channels, cells, arch, shape, classes, params, macs))
        n += 1
    print("%d members" % n, file=sys.stderr)


if __name__ == "__main__":
    main()
