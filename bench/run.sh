#!/usr/bin/env bash
# The engine benchmark: nasc and PyTorch (../shared/bench/torch_ref.py, Debian's python3-torch)
# on the same machine, in the same run, with the same threads, on the same three networks.
# Prints both sides and the ratios (nasc / PyTorch; for latency PyTorch / nasc, so > 1 means
# nasc is faster everywhere) of each side's best round, and the range of the rounds' training
# ratios. Usage: bash bench/run.sh [THREADS] [ROUNDS]
# ISA=avx2 runs both sides as on a machine without AVX-512 (most laptops): nasc built without
# the AVX-512 clones of its compiler-vectorized loops (build-avx2/, -DNASC_NO_AVX512_CLONES) and
# run with NASC_GEMM=avx2 (its AVX2 and plain C kernels), PyTorch with ATEN_CPU_CAPABILITY=avx2
# and oneDNN limited to AVX2 (DNNL_MAX_CPU_ISA). The "% of peak" column is then against the AVX2
# FMA peak that bench_train measures (on AMD Zen 4 the same as AVX-512's; half of it on Intel's
# AVX-512 cores).
set -eu
cd "$(dirname "$0")/.."
T=${1:-2}
ROUNDS=${2:-2}
ISA=${ISA:-}
NASC_ENV=() TORCH_ENV=() NASC_BUILD=build
case "$ISA" in
    "") ;;
    avx2) NASC_ENV=(NASC_GEMM=avx2) TORCH_ENV=(ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)
          NASC_BUILD=build-avx2 ;;
    *) echo "bench/run.sh: ISA=$ISA: only avx2 (or unset) is known" >&2; exit 2 ;;
esac
make -s all >/dev/null
if [ "$NASC_BUILD" = build-avx2 ]; then
    make -s BUILD=build-avx2 CFLAGS=-DNASC_NO_AVX512_CLONES build-avx2/bench/bench_train >/dev/null
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)${ISA:+, both sides limited to $ISA}"
REF=${TORCH_REF:-../shared/bench/torch_ref.py}
out=$(mktemp -d)
for r in $(seq "$ROUNDS"); do   # interleave the two sides so machine noise hits both alike
    env "${NASC_ENV[@]}" "$NASC_BUILD/bench/bench_train" --threads "$T" | tee -a "$out/nasc.txt" | grep -v '^RESULT' || true
    env "${TORCH_ENV[@]}" /usr/bin/python3 "$REF" bench --threads "$T" 2>/dev/null | tee -a "$out/torch.txt" |
        grep -v '^RESULT' || true
done
/usr/bin/python3 - "$out/nasc.txt" "$out/torch.txt" <<'PY'
import json, sys, statistics
def load(p):
    d = {}
    for line in open(p):
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            d.setdefault(r["model"], []).append(r)
    return d
n, t = load(sys.argv[1]), load(sys.argv[2])
# the fp32 peak bench_train measured on this machine (the highest of the rounds; none without
# AVX-512 or AVX2 + FMA, where the share is not printed)
peaks = [json.loads(l[5:])["fp32_gflops"] for l in open(sys.argv[1]) if l.startswith("PEAK ")]
peak = max(peaks) if peaks and max(peaks) > 0 else None
share = lambda g: f"{100*g/peak:.1f}%" if peak else "n/a"
peak_head = f"% of peak ({peak:.0f})" if peak else "% of peak (not measured)"
def best(rs, k, low=False):
    v = [r[k] for r in rs]
    return min(v) if low else max(v)
print()
# the training ratio of each round (nasc's round r against PyTorch's round r, run back to back):
# its spread shows how far the machine's load moved the best-of-rounds ratio
def spread(a, b):
    r = [x["train_img_s"] / y["train_img_s"] for x, y in zip(a, b)]
    return f"{min(r):.2f}-{max(r):.2f}x" if len(r) > 1 else "-"
print(f"| network | nasc train img/s | PyTorch train img/s | ratio | ratio by round | nasc infer img/s (b128) | PyTorch | ratio | nasc b1 ms | PyTorch b1 ms | speed-up | nasc train GFLOP/s | {peak_head} |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for m in ["small", "resnet8", "mbv2"]:
    if m not in n or m not in t: continue
    a, b = n[m], t[m]
    tr, ttr = best(a, "train_img_s"), best(b, "train_img_s")
    inf, tinf = best(a, "infer_img_s"), best(b, "infer_img_s")
    l, tl = best(a, "b1_latency_ms_median", True), best(b, "b1_latency_ms_median", True)
    g = best(a, "train_gflops_eff")
    print(f"| {m} | {tr:,.0f} | {ttr:,.0f} | {tr/ttr:.2f}x | {spread(a, b)} | {inf:,.0f} | {tinf:,.0f} | {inf/tinf:.2f}x | {l:.3f} | {tl:.3f} | {tl/l:.2f}x | {g:.1f} | {share(g)} |")
PY
rm -rf "$out"
