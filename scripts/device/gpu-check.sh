#!/usr/bin/env bash
# Runs ON the GPU machine (no Rust there): the prebuilt GPU test and benchmark that
# scripts/gpu-check put in .device/, then torch's side of the benchmark, then a side-by-side
# table (printed last). Writes full logs under $OUT when set.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/gpu.txt"
echo "== GPU check: every kernel against the CPU engine"
.device/cuda_ops --test-threads=1 --nocapture >"$out/cuda_ops.log" 2>&1
test_rc=$?
grep -E "rel |differ|^test |panicked|test result" "$out/cuda_ops.log" | tail -n 400 >"$out/cuda_ops.summary"
grep -E "^test |panicked|test result" "$out/cuda_ops.log" | tail -n 30
echo "== benchmarks"
.device/gpu_bench >"$out/ours.txt" 2>&1; bench_rc=$?
python3 scripts/gpu_bench_torch.py >"$out/torch.txt" 2>&1; torch_rc=$?
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
echo "rc: test $test_rc, bench $bench_rc, torch $torch_rc"
exit $(( test_rc || bench_rc ))
