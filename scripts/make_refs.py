#!/usr/bin/python3
"""make_refs.py: PyTorch reference files for whole-network checks of nasc (tests/test_torch_ref.c).

Run with Debian's interpreter (python3-torch 1.13):   /usr/bin/python3 scripts/make_refs.py tests/ref
(or `make refs`). PyTorch is only a tool for making these files: they are committed, and the C
test reads them without Python.

Each network is written here as ordinary torch nn.Modules, independently of nasc's spec parser,
next to the nasc spec text that should describe the same network. For each one the script:
  1. seeds torch, builds the model with PyTorch's default init, then (for a stronger test than
     gamma=1, beta=0, mean=0, var=1) draws every BN's gamma, beta, running_mean and running_var
     at random, and draws an input batch x and labels y;
  2. converts everything to float64 (the float32 values are exact in double) so that the
     reference carries no float32 rounding of its own;
  3. one training-mode forward + mean cross-entropy + backward: logits, loss, every gradient;
  4. from the initial state again: three steps of SGD(lr=0.1, momentum=0.9, nesterov=True,
     weight_decay=5e-4) on the same batch in training mode (zero_grad, forward, CE, backward,
     step): the loss of each step, the parameters and the BN running statistics after the
     third step, then one eval-mode forward's logits.

File format (all little-endian):
    magic    4 bytes  "NREF"
    version  u32      1
    count    u32      number of records
    count records, each:
        name_len u32, name (name_len bytes of UTF-8, no NUL)
        dtype    u32      0 = float32, 1 = int32, 2 = text (UTF-8 bytes)
        ndim     u32      0..4 (0 = scalar, one element)
        dims     u32 x ndim
        data     prod(dims) elements (4 bytes each; 1 byte each for text)
    crc      u32      CRC-32 (zlib) of every byte before it
Records, in this order:
    spec            text   nasc spec text of the network
    meta            int32  (6): in_c, in_h, in_w, classes, channels, cells (channels/cells are
                           spec_parse's NB201 arguments; 0 for other specs)
    node_nparam     int32  (k): parameter count of each nasc node that has parameters, in order
    node_nbuf       int32  (m): buffer count of each nasc node that has buffers (BN: 2*C)
    x               f32    (N, C, H, W)
    y               int32  (N)
    init/NAME       f32    the initial parameters in nasc's order (node by node in spec order;
                           conv: weight (cout, cin/g, k, k), bias; bn: gamma, beta; linear:
                           weight (out, in), bias); NAME is the torch parameter name
    binit/NAME      f32    initial BN buffers, per BN node: running_mean, running_var
    logits          f32    (N, classes) of the first training-mode forward
    loss            f32    scalar, mean cross-entropy of those logits
    grad/NAME       f32    d loss / d parameter, same order and shapes as init/
    loss_steps      f32    (3) the training loss computed in each of the three SGD steps
    step3/NAME      f32    parameters after the three steps
    bstep3/NAME     f32    BN buffers after the three steps
    logits_eval     f32    (N, classes) eval-mode forward after the three steps
"""
import os
import struct
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 4
CLASSES = 10
MAGIC = b"NREF"
VERSION = 1
DT_F32, DT_I32, DT_TEXT = 0, 1, 2


# ----------------------------------------------------------------------------- modules
def conv(cin, cout, k, s=1, g=1, bias=False):
    return nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=bias)


class ResNetSmall(nn.Module):
    """stem conv3x3(8)-BN-ReLU; basic block (identity shortcut); basic block stride 2 with a
    conv1x1+BN projection; GAP; linear."""

    SPEC = """# small ResNet
conv(c=8,k=3,p=1,bias=0); bn; stem=relu
conv(c=8,k=3,p=1,bias=0); bn; relu
conv(c=8,k=3,p=1,bias=0); bn
add(_, stem)
b1=relu
conv(c=16,k=3,s=2,p=1,bias=0); bn; relu
conv(c=16,k=3,p=1,bias=0); main=bn
conv(b1, c=16,k=1,s=2,p=0,bias=0); bn
add(main, _); relu
gap; linear
"""

    def __init__(self, cin, classes):
        super().__init__()
        # Registered in the spec's order (nasc's parameter order).
        self.stem_conv, self.stem_bn = conv(cin, 8, 3), nn.BatchNorm2d(8)
        self.b1_conv1, self.b1_bn1 = conv(8, 8, 3), nn.BatchNorm2d(8)
        self.b1_conv2, self.b1_bn2 = conv(8, 8, 3), nn.BatchNorm2d(8)
        self.b2_conv1, self.b2_bn1 = conv(8, 16, 3, 2), nn.BatchNorm2d(16)
        self.b2_conv2, self.b2_bn2 = conv(16, 16, 3), nn.BatchNorm2d(16)
        self.b2_proj, self.b2_proj_bn = conv(8, 16, 1, 2), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        stem = F.relu(self.stem_bn(self.stem_conv(x)))
        h = F.relu(self.b1_bn1(self.b1_conv1(stem)))
        b1 = F.relu(self.b1_bn2(self.b1_conv2(h)) + stem)
        h = F.relu(self.b2_bn1(self.b2_conv1(b1)))
        main = self.b2_bn2(self.b2_conv2(h))
        h = F.relu(main + self.b2_proj_bn(self.b2_proj(b1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class InvRes(nn.Module):
    """MobileNetV2-style: stem conv3x3(8)-BN-ReLU6; inverted residual (x2, residual add);
    max pool of that beside an inverted residual with stride 2, hard-swish and squeeze-excitation;
    channel concat; avg pool (count_include_pad False); inverted residual (residual add);
    hard-swish; GAP; linear with bias."""

    SPEC = """# MobileNetV2-style
conv(c=8,k=3,p=1,bias=0); bn; s=relu6
conv(c=16,k=1,p=0,bias=0); bn; relu6
conv(c=16,k=3,p=1,g=16,bias=0); bn; relu6
conv(c=8,k=1,p=0,bias=0); bn
b1=add(_, s)
mp=maxpool(b1, k=3,s=2,p=1)
conv(b1, c=24,k=1,p=0,bias=0); bn; hswish
conv(c=24,k=3,s=2,p=1,g=24,bias=0); bn; dw=relu6
gap; conv(c=8,k=1,p=0,bias=1); relu; conv(c=24,k=1,p=0,bias=1); se=hsigmoid
mul(dw, se)
conv(c=8,k=1,p=0,bias=0); b2=bn
concat(b2, mp)
b3in=avgpool(k=3,s=2,p=1,cip=0)
conv(c=32,k=1,p=0,bias=0); bn; relu6
conv(c=32,k=3,p=1,g=32,bias=0); bn; relu6
conv(c=16,k=1,p=0,bias=0); bn
add(_, b3in)
hswish; gap; linear(bias=1)
"""

    def __init__(self, cin, classes):
        super().__init__()
        self.stem_conv, self.stem_bn = conv(cin, 8, 3), nn.BatchNorm2d(8)
        self.b1_exp, self.b1_exp_bn = conv(8, 16, 1), nn.BatchNorm2d(16)
        self.b1_dw, self.b1_dw_bn = conv(16, 16, 3, 1, 16), nn.BatchNorm2d(16)
        self.b1_proj, self.b1_proj_bn = conv(16, 8, 1), nn.BatchNorm2d(8)
        self.b2_exp, self.b2_exp_bn = conv(8, 24, 1), nn.BatchNorm2d(24)
        self.b2_dw, self.b2_dw_bn = conv(24, 24, 3, 2, 24), nn.BatchNorm2d(24)
        self.se_reduce = conv(24, 8, 1, bias=True)
        self.se_expand = conv(8, 24, 1, bias=True)
        self.b2_proj, self.b2_proj_bn = conv(24, 8, 1), nn.BatchNorm2d(8)
        self.b3_exp, self.b3_exp_bn = conv(16, 32, 1), nn.BatchNorm2d(32)
        self.b3_dw, self.b3_dw_bn = conv(32, 32, 3, 1, 32), nn.BatchNorm2d(32)
        self.b3_proj, self.b3_proj_bn = conv(32, 16, 1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.avgpool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)

    def forward(self, x):
        s = F.relu6(self.stem_bn(self.stem_conv(x)))
        h = F.relu6(self.b1_exp_bn(self.b1_exp(s)))
        h = F.relu6(self.b1_dw_bn(self.b1_dw(h)))
        b1 = self.b1_proj_bn(self.b1_proj(h)) + s
        mp = self.maxpool(b1)
        h = F.hardswish(self.b2_exp_bn(self.b2_exp(b1)))
        dw = F.relu6(self.b2_dw_bn(self.b2_dw(h)))
        se = F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(F.adaptive_avg_pool2d(dw, 1)))))
        b2 = self.b2_proj_bn(self.b2_proj(dw * se))
        b3in = self.avgpool(torch.cat([b2, mp], 1))
        h = F.relu6(self.b3_exp_bn(self.b3_exp(b3in)))
        h = F.relu6(self.b3_dw_bn(self.b3_dw(h)))
        h = F.hardswish(self.b3_proj_bn(self.b3_proj(h)) + b3in)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


# NAS-Bench-201, written as NB201's TinyNetwork (infer version).
class ReLUConvBN(nn.Module):
    def __init__(self, cin, cout, k, s, p):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(cin, cout, k, s, p, bias=False),
                                nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.op(x)


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


class Identity(nn.Module):
    def forward(self, x):
        return x


def nb201_op(name, c):
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0)
    raise ValueError("unknown NB201 op " + name)


def nb201_genotype(arch):
    """'|a~0|+|b~0|c~1|+|...|' -> [[(a, 0)], [(b, 0), (c, 1)], ...] (NB201's str2structure)."""
    nodes = []
    for node in arch.split("+"):
        edges = [e for e in node.split("|") if e]
        nodes.append([(e.split("~")[0], int(e.split("~")[1])) for e in edges])
    return nodes


class InferCell(nn.Module):
    def __init__(self, genotype, c):
        super().__init__()
        self.layers = nn.ModuleList()
        self.node_in = []
        for node in genotype:
            idx, ins = [], []
            for name, src in node:
                idx.append(len(self.layers))
                ins.append(src)
                self.layers.append(nb201_op(name, c))
            self.node_in.append(list(zip(idx, ins)))

    def forward(self, x):
        nodes = [x]
        for edges in self.node_in:
            nodes.append(sum(self.layers[l](nodes[i]) for l, i in edges))
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2, 1)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(cin, cout, 1, 1, 0, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    def __init__(self, arch, cin, c, n, classes):
        super().__init__()
        genotype = nb201_genotype(arch)
        self.stem = nn.Sequential(nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        chans = [c] * n + [2 * c] + [2 * c] * n + [4 * c] + [4 * c] * n
        reds = [False] * n + [True] + [False] * n + [True] + [False] * n
        self.cells = nn.ModuleList()
        cprev = c
        for cc, red in zip(chans, reds):
            self.cells.append(ResNetBasicblock(cprev, cc) if red else InferCell(genotype, cc))
            cprev = cc
        self.lastact = nn.Sequential(nn.BatchNorm2d(cprev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cprev, classes)

    def forward(self, x):
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        h = self.global_pooling(self.lastact(h))
        return self.classifier(h.view(h.size(0), -1))


def nb201_param_count(arch, cin, c, n, classes):
    """Parameter count from the NB201 definition, computed without the modules (a cross-check)."""
    genotype = nb201_genotype(arch)
    total = cin * c * 9 + 2 * c
    for cc in (c, 2 * c, 4 * c):
        per_cell = 0
        for node in genotype:
            for name, _ in node:
                if name == "nor_conv_3x3":
                    per_cell += cc * cc * 9 + 2 * cc
                elif name == "nor_conv_1x1":
                    per_cell += cc * cc + 2 * cc
        total += n * per_cell
        if cc != 4 * c:  # reduction block cc -> 2cc
            total += cc * 2 * cc * 9 + 4 * cc + 2 * cc * 2 * cc * 9 + 4 * cc + cc * 2 * cc
    return total + 2 * 4 * c + 4 * c * classes + classes


# ----------------------------------------------------------------------------- networks
NB201_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
NB201_B = "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|nor_conv_3x3~0|skip_connect~1|none~2|"

# name: (builder, spec text, (in_c, in_h, in_w), nb201 channels, nb201 cells, expected param count)
NETS = {
    "resnet": (lambda: ResNetSmall(1, CLASSES), ResNetSmall.SPEC, (1, 12, 12), 0, 0,
               72 + 16 + 576 + 16 + 576 + 16 + 1152 + 32 + 2304 + 32 + 128 + 32 + 160 + 10),
    "invres": (lambda: InvRes(1, CLASSES), InvRes.SPEC, (1, 16, 16), 0, 0,
               72 + 16 + 128 + 32 + 144 + 32 + 128 + 16 + 192 + 48 + 216 + 48 + 200 + 216 + 192 + 16
               + 512 + 64 + 288 + 64 + 512 + 32 + 170),
    "nb201_a": (lambda: TinyNetwork(NB201_A, 1, 4, 1, CLASSES), "nb201:" + NB201_A, (1, 12, 12), 4, 1,
                nb201_param_count(NB201_A, 1, 4, 1, CLASSES)),
    "nb201_b": (lambda: TinyNetwork(NB201_B, 1, 4, 2, CLASSES), "nb201:" + NB201_B, (1, 16, 16), 4, 2,
                nb201_param_count(NB201_B, 1, 4, 2, CLASSES)),
}


def nasc_nodes(model):
    """The parameterized leaf modules in nasc's order. Every model above registers its modules in
    spec order, so this is registration order; the assertions below check it covers every
    parameter exactly once and in the order of model.parameters()."""
    nodes = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    params = [p for m in nodes for p in (m.weight, m.bias) if p is not None]
    assert [id(p) for p in params] == [id(p) for p in model.parameters()], "parameter order"
    return nodes


# ----------------------------------------------------------------------------- file writing
class RefWriter:
    def __init__(self):
        self.records = []

    def add(self, name, dtype, dims, payload):
        assert len(dims) <= 4
        rec = struct.pack("<I", len(name.encode())) + name.encode()
        rec += struct.pack("<II", dtype, len(dims)) + struct.pack("<%dI" % len(dims), *dims)
        self.records.append(rec + payload)

    def text(self, name, s):
        b = s.encode()
        self.add(name, DT_TEXT, [len(b)], b)

    def i32(self, name, values):
        values = [int(v) for v in values]
        self.add(name, DT_I32, [len(values)], struct.pack("<%di" % len(values), *values))

    def f32(self, name, t):
        t = t.detach().to(torch.float32).contiguous()
        flat = t.reshape(-1).tolist()
        self.add(name, DT_F32, list(t.shape), struct.pack("<%df" % len(flat), *flat))

    def bytes(self):
        body = MAGIC + struct.pack("<II", VERSION, len(self.records)) + b"".join(self.records)
        return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def make_ref(name, builder, spec, shape, channels, cells, expect_params):
    torch.manual_seed(1234)
    model = builder()
    nodes = nasc_nodes(model)
    nparams = sum(p.numel() for p in model.parameters())
    assert nparams == expect_params, "%s: %d parameters, expected %d" % (name, nparams, expect_params)
    # Random BN affine parameters and statistics (float32 draws, exact in double below).
    with torch.no_grad():
        for m in nodes:
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, CLASSES, (BATCH,))
    model = model.double()
    x = x.double()

    pnames = {id(p): n for n, p in model.named_parameters()}
    params = [(pnames[id(p)], p) for m in nodes for p in (m.weight, m.bias) if p is not None]
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for m in nodes:  # shapes as nasc lays them out
        if isinstance(m, nn.Conv2d):
            assert tuple(m.weight.shape) == (m.out_channels, m.in_channels // m.groups) + m.kernel_size
        elif isinstance(m, nn.Linear):
            assert tuple(m.weight.shape) == (m.out_features, m.in_features)

    def buffers():
        out = []
        for n, m in bns:
            out += [(n + ".running_mean", m.running_mean.clone()), (n + ".running_var", m.running_var.clone())]
        return out

    w = RefWriter()
    w.text("spec", spec)
    w.i32("meta", [shape[0], shape[1], shape[2], CLASSES, channels, cells])
    w.i32("node_nparam", [sum(p.numel() for p in (m.weight, m.bias) if p is not None) for m in nodes])
    w.i32("node_nbuf", [2 * m.num_features for _, m in bns])
    w.f32("x", x)
    w.i32("y", y.tolist())
    init_params = [(n, p.detach().clone()) for n, p in params]
    init_bufs = buffers()
    for n, p in init_params:
        w.f32("init/" + n, p)
    for n, b in init_bufs:
        w.f32("binit/" + n, b)

    # One training-mode forward/backward.
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    w.f32("logits", logits)
    w.f32("loss", loss)
    for n, p in params:
        w.f32("grad/" + n, p.grad)

    # Three SGD steps from the initial state.
    with torch.no_grad():
        for (_, p), (_, p0) in zip(params, init_params):
            p.copy_(p0)
        for (n, b0), m in zip(init_bufs[0::2], [m for _, m in bns]):
            m.running_mean.copy_(b0)
        for (n, b0), m in zip(init_bufs[1::2], [m for _, m in bns]):
            m.running_var.copy_(b0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    w.f32("loss_steps", torch.tensor(losses))
    for n, p in params:
        w.f32("step3/" + n, p)
    for n, b in buffers():
        w.f32("bstep3/" + n, b)
    model.eval()
    with torch.no_grad():
        w.f32("logits_eval", model(x))
    return w.bytes(), nparams


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "ref")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    for name, (builder, spec, shape, channels, cells, expect) in NETS.items():
        data, nparams = make_ref(name, builder, spec, shape, channels, cells, expect)
        assert len(data) < 300 * 1024, "%s: %d bytes" % (name, len(data))
        path = os.path.join(outdir, name + ".ref")
        with open(path, "wb") as f:
            f.write(data)
        print("%-8s %6d params  %7d bytes  %s" % (name, nparams, len(data), path))


if __name__ == "__main__":
    main()
