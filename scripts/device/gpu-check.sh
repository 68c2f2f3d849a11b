#!/usr/bin/env bash
# Runs ON the GPU machine (no Rust there): the prebuilt GPU tests and benchmarks that
# scripts/gpu-check put in .device/, torch's side of each benchmark, then side-by-side tables
# (printed last). Writes full logs under $OUT when set.
#   scripts/device/gpu-check.sh [all|tests|kernels|train]
#     tests    every kernel against the CPU engine, then the training step against the CPU's
#     kernels  memory-bound kernels and GEMMs against torch's ops (gpu_bench)
#     train    pretraining throughput against transformers' BertForPreTraining (gpu_train_bench)
#     all      the three, in that order (about 8-10 minutes; torch.compile is most of the train stage)
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=${1:-all}
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/gpu.txt"
rc=0

if [[ $stage == all || $stage == tests ]]; then
  echo "== GPU check: every kernel against the CPU engine"
  .device/cuda_ops --test-threads=1 --nocapture >"$out/cuda_ops.log" 2>&1 || rc=1
  grep -E "rel |differ|^test |panicked|test result" "$out/cuda_ops.log" | tail -n 400 >"$out/cuda_ops.summary"
  grep -E "^test |panicked|test result" "$out/cuda_ops.log" | tail -n 30
  echo "== GPU check: the pretraining step against the CPU's"
  .device/step_cuda --test-threads=1 --nocapture >"$out/step_cuda.log" 2>&1 || rc=1
  grep -E "^test |panicked|test result|loss cpu|step [0-9]+:" "$out/step_cuda.log" | tail -n 40
fi

if [[ $stage == all || $stage == kernels ]]; then
  echo "== kernel benchmarks"
  .device/gpu_bench >"$out/ours.txt" 2>&1 || rc=1
  python3 scripts/gpu_bench_torch.py >"$out/torch.txt" 2>&1 || rc=1
  tail -n 3 "$out/ours.txt" "$out/torch.txt" | grep -iE "error|panick" || true
  python3 - "$out/ours.txt" "$out/torch.txt" <<'PY'
import sys
def load(p):
    d = {}
    for line in open(p):
        w = line.split()
        if line.startswith("#") or len(w) < 4: continue
        try: d[" ".join(w[:-3])] = (float(w[-3]), float(w[-2]), w[-1])
        except ValueError: pass
    return d
ours, torch = load(sys.argv[1]), load(sys.argv[2])
copy = ours.get("copy f32 [16384,3072]", (0, 0, ""))[1]
print(f"\n{'op':<48}{'ours ms':>9}{'torch ms':>9}{'torch/ours':>11}{'ours rate':>16}{'% copy':>8}")
for name, (ms, rate, unit) in ours.items():
    t = torch.get(name)
    frac = f"{100 * rate / copy:.0f}%" if unit == "GB/s" and copy else ""
    print(f"{name:<48}{ms:>9.4f}{(t[0] if t else float('nan')):>9.4f}"
          f"{(t[0] / ms if t else float('nan')):>11.2f}{rate:>10.1f} {unit:<5}{frac:>8}")
PY
fi

if [[ $stage == all || $stage == train ]]; then
  echo "== pretraining throughput"
  .device/gpu_train_bench >"$out/train_ours.txt" 2>&1 || rc=1
  python3 scripts/gpu_train_torch.py >"$out/train_torch.txt" 2>&1 || rc=1
  grep -iE "error|panick|^# train" "$out/train_ours.txt" "$out/train_torch.txt" | head -20 || true
  python3 - "$out/train_ours.txt" "$out/train_torch.txt" <<'PY'
import sys
def load(p):
    rows = {}
    for line in open(p):
        w = line.split()
        if not line.startswith("train ") or len(w) < 7: continue
        rows[(w[1], w[2], w[3], w[4], w[5])] = [float(x) for x in w[6:]]
    return rows
ours, torch = load(sys.argv[1]), load(sys.argv[2])
print(f"\n{'config':<34}{'ours':>6}{'tok/s':>10}{'TFLOP/s':>9}   torch tok/s: fp32 / tf32 / bf16 / bf16-compile")
for (m, b, s, l, math), v in ours.items():
    tl = "padded" if l == "packed" else l  # torch has no packed batches: beside its padded row
    t = [torch.get((m, b, s, tl, mode), [0, 0])[1] for mode in ["fp32", "tf32", "bf16", "bf16-compile"]]
    print(f"{m + ' ' + b + ' ' + s + ' ' + l:<34}{math:>6}{v[1]:>10.0f}{v[2]:>9.1f}   "
          + " / ".join(f"{x:.0f}" for x in t))
def load_inf(p):
    rows = {}
    for line in open(p):
        w = line.split()
        if line.startswith("infer ") and len(w) >= 7:
            rows[(w[1], w[2], w[3], w[5])] = float(w[6])
    return rows
oi, ti = load_inf(sys.argv[1]), load_inf(sys.argv[2])
print(f"\n{'inference':<24}{'ours F32 ms':>12}{'TF32':>8}{'bf16':>8}{'torch fp32':>11}{'tf32':>8}{'fp32 graphs':>12}")
for (m, b, s) in sorted({k[:3] for k in oi}):
    g = lambda d, mode: d.get((m, b, s, mode), float('nan'))
    print(f"{m + ' ' + b + ' ' + s:<24}{g(oi, 'F32'):>12.3f}{g(oi, 'Tf32'):>8.3f}{g(oi, 'Bf16'):>8.3f}{g(ti, 'fp32'):>11.3f}{g(ti, 'tf32'):>8.3f}{g(ti, 'fp32-graphs'):>12.3f}")
PY
fi
echo "rc: $rc"
exit $rc
