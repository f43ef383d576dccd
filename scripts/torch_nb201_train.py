#!/usr/bin/python3
"""torch_nb201_train.py: the PyTorch side of the NAS-Bench-201 recipe-parity experiment.

Builds NAS-Bench-201's TinyNetwork (the "infer" version: xautodl models/cell_infers) for one cell
string and trains it on Fashion-MNIST with NB201's recipe, so `nasc train` can be compared with it
on the same architecture, data and schedule.

Network (C = --channels, N = --cells):
    stem   Conv2d(in_ch, C, 3, padding=1, bias=False) + BN(C)
    N cells at C | ResNet reduction C->2C | N cells at 2C | reduction 2C->4C | N cells at 4C
    BN + ReLU + global average pool + Linear(4C, classes)
  cell: node 0 = input, node j (1..3) = sum over i<j of op_{i->j}(node i), output = node 3
    nor_conv_kxk  ReLU - Conv(k, padding k//2, bias=False) - BN (affine, running stats)
    avg_pool_3x3  AvgPool2d(3, stride 1, padding 1, count_include_pad=False)
    skip_connect  identity;  none  x*0
  reduction (ResNetBasicblock, stride 2):
    branch   ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN
    shortcut AvgPool2d(2, stride 2) + Conv2d 1x1 (bias=False);  output = shortcut + branch
  Modules are created in NB201's order (so a seed gives NB201's init): stem, cells/reductions
  in order (a cell's ops in the order of the string), last BN, classifier. PyTorch default init.
Recipe: SGD lr 0.1, momentum 0.9, nesterov, weight decay 5e-4 on every parameter, batch 256,
  CosineAnnealingLR(T_max = all steps, eta_min 0) stepped after every batch, no augmentation,
  inputs (x/255 - 0.2860)/0.3530, plain cross-entropy, reshuffled every epoch with a seeded
  generator, last partial batch kept (DataLoader drop_last=False).

Run with Debian's interpreter (python3-torch 1.13, CPU). Data: /usr/share/datasets/fashion-mnist
(Debian package dataset-fashion-mnist, IDX gzip); nothing is downloaded.
    /usr/bin/python3 scripts/torch_nb201_train.py \
        --arch '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|' \
        --channels 16 --cells 1 --epochs 12 --seed 0 --threads 2 --json /tmp/nb201_torch.jsonl
Prints one line per epoch (train loss, test accuracy) and, last, one JSON line
{"test_acc": ..., "params": ..., "seconds": ..., ...}; --json FILE also appends that line to FILE.
--max-steps K stops after K optimizer steps (quick checks; the schedule still spans all epochs).
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
OP_NAMES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


# ----------------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    if (magic >> 8) != 0x08:
        raise ValueError(f"{path}: expected unsigned-byte IDX data")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fmnist(data_dir):
    def imgs(name):
        a = read_idx(os.path.join(data_dir, name)).astype(np.float32) / 255.0
        a = (a - FMNIST_MEAN) / FMNIST_STD
        return torch.from_numpy(a).unsqueeze(1).contiguous()  # (N, 1, 28, 28)

    def labs(name):
        return torch.from_numpy(read_idx(os.path.join(data_dir, name)).astype(np.int64))

    xtr, ytr = imgs("train-images-idx3-ubyte.gz"), labs("train-labels-idx1-ubyte.gz")
    xte, yte = imgs("t10k-images-idx3-ubyte.gz"), labs("t10k-labels-idx1-ubyte.gz")
    return xtr, ytr, xte, yte


# ----------------------------------------------------------------------------- cell string
def parse_arch(s):
    """'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' -> [[(op, 0)], [(op, 0), (op, 1)], [...]].
    An optional 'nb201:' prefix is accepted. Raises ValueError on a malformed string."""
    if s.startswith("nb201:"):
        s = s[len("nb201:"):]
    nodes = []
    for j, part in enumerate(s.split("+"), start=1):
        if not (part.startswith("|") and part.endswith("|")) or len(part) < 3:
            raise ValueError(f"node {j}: '{part}' is not of the form |op~i|...|")
        edges = []
        for tok in part[1:-1].split("|"):
            op, sep, src = tok.partition("~")
            if not sep or op not in OP_NAMES or not src.isdigit() or int(src) >= j:
                raise ValueError(f"node {j}: bad edge '{tok}' (want op~i with op in "
                                 f"{', '.join(OP_NAMES)} and i < {j})")
            edges.append((op, int(src)))
        nodes.append(edges)
    if len(nodes) != 3:
        raise ValueError(f"an NB201 cell has 3 nodes, got {len(nodes)}")
    return nodes


# ----------------------------------------------------------------------------- network
class ReLUConvBN(nn.Sequential):
    def __init__(self, cin, cout, k, stride):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout, affine=True, track_running_stats=True))


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def make_op(name, c):
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity()
    if name == "none":
        return Zero()
    raise ValueError(name)


class InferCell(nn.Module):
    def __init__(self, nodes, c):
        super().__init__()
        self.layers = nn.ModuleList()
        self.wiring = []  # per node: list of (layer index, input node)
        for edges in nodes:
            cur = []
            for op, src in edges:
                cur.append((len(self.layers), src))
                self.layers.append(make_op(op, c))
            self.wiring.append(cur)

    def forward(self, x):
        feats = [x]
        for cur in self.wiring:
            feats.append(sum(self.layers[li](feats[src]) for li, src in cur))
        return feats[-1]


class ResNetBasicblock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(cin, cout, kernel_size=1, stride=1, padding=0,
                                                  bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    def __init__(self, nodes, C, N, in_ch=1, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        chans = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
        reds = [False] * N + [True] + [False] * N + [True] + [False] * N
        self.cells = nn.ModuleList()
        c_prev = C
        for c, red in zip(chans, reds):
            self.cells.append(ResNetBasicblock(c_prev, c) if red else InferCell(nodes, c))
            c_prev = c
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(torch.flatten(x, 1))


# ----------------------------------------------------------------------------- training
def evaluate(model, x, y, B=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], B):
            correct += (model(x[i:i + B]).argmax(1) == y[i:i + B]).sum().item()
    return correct / x.shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, help="NB201 cell string, e.g. '|nor_conv_3x3~0|+|...|'")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=1, help="cells per stage (NB201's N)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all)")
    ap.add_argument("--data", default=DATA_DIR, help="folder with Fashion-MNIST's IDX .gz files")
    ap.add_argument("--json", default=None, help="append the final JSON line to this file")
    args = ap.parse_args()
    try:
        nodes = parse_arch(args.arch)
    except ValueError as e:
        ap.error(f"--arch: {e}")
    for name in ("channels", "cells", "epochs", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")

    torch.set_num_threads(args.threads)
    try:
        xtr, ytr, xte, yte = load_fmnist(args.data)
    except (OSError, ValueError) as e:
        sys.exit(f"torch_nb201_train: cannot read Fashion-MNIST from {args.data}: {e}\n"
                 f"  hint: apt-get install dataset-fashion-mnist, or pass --data DIR")

    torch.manual_seed(args.seed)
    model = TinyNetwork(nodes, args.channels, args.cells, in_ch=xtr.shape[1], num_classes=10)
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} arch={args.arch} "
          f"C={args.channels} N={args.cells} params={params}", flush=True)

    B, E, n = args.batch, args.epochs, xtr.shape[0]
    steps_per_epoch = math.ceil(n / B)
    total = steps_per_epoch * E
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                          weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0.0)
    gen = torch.Generator().manual_seed(args.seed)

    t0 = time.perf_counter()
    step, acc, train_loss = 0, 0.0, float("nan")
    for ep in range(E):
        model.train()
        perm = torch.randperm(n, generator=gen)
        run_loss, seen, correct = 0.0, 0, 0
        for s in range(steps_per_epoch):
            if args.max_steps and step >= args.max_steps:
                break
            idx = perm[s * B:(s + 1) * B]
            x, y = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            run_loss += loss.item() * x.shape[0]
            correct += (logits.argmax(1) == y).sum().item()
            seen += x.shape[0]
        train_loss = run_loss / max(seen, 1)
        acc = evaluate(model, xte, yte)
        print(f"epoch {ep + 1}/{E} steps {step} train_loss {train_loss:.4f} "
              f"train_acc {correct / max(seen, 1):.4f} test_acc {acc:.4f} "
              f"lr {opt.param_groups[0]['lr']:.6f} time {time.perf_counter() - t0:.1f}s", flush=True)
        if args.max_steps and step >= args.max_steps:
            break

    rec = dict(test_acc=acc, params=params, seconds=round(time.perf_counter() - t0, 2),
               train_loss=round(train_loss, 6), steps=step, epochs=E, arch=args.arch,
               channels=args.channels, cells=args.cells, batch=B, seed=args.seed,
               threads=torch.get_num_threads(), impl="torch", torch=torch.__version__)
    line = json.dumps(rec)
    print(line, flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
