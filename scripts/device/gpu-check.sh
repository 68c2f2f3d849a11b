#!/usr/bin/env bash
# Runs ON the GPU machine (no Rust there): the prebuilt GPU tests and benchmarks that
# scripts/gpu-check put in .device/, torch's side of each benchmark, then side-by-side tables
# (printed last). Writes full logs under $OUT when set.
#   scripts/device/gpu-check.sh [all|tests|kernels|train]
#     tests    every kernel against the CPU engine, then the training step against the CPU's
#     kernels  memory-bound kernels and GEMMs against torch's ops (gpu_bench)
#     train    pretraining throughput against transformers' BertForPreTraining (gpu_train_bench)
#     all      the three, in that order (about 8-10 minutes; torch.compile is most of the train stage)
#     finetune not in all: a fine-tuning step of each family (seq-cls, token-cls, qa; MiniLM and
#              BERT-base shapes, batch 32 x 128, QA 32 x 384) on Cuda and CudaBf16 against
#              transformers' BertFor... with AdamW in fp32 and bf16 autocast (3-5 minutes)
#     cpu      not a GPU check: the host CPU's AVX-512 / AVX512-BF16 paths, which the development
#              machine lacks (engine tests on the real intrinsics, f32 vs bf16 GEMM, BERT-base
#              inference f32 and bf16 beside torch on 1 and 2 threads; 3-5 minutes)
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=${1:-all}
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
[[ $stage == cpu ]] || nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/gpu.txt"
rc=0

if [[ $stage == cpu ]]; then
  echo "== host CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores;" \
    "flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16' | tr '\n' ' ')"
  echo "== engine tests on this CPU (every ISA it has: the real AVX-512 intrinsics, native vdpbf16ps)"
  for t in engine_lib engine_kernels; do
    .device/cpu/$t --test-threads=8 >"$out/$t.log" 2>&1 || rc=1
    grep -E "panicked|FAILED|test result" "$out/$t.log" | tail -n 12
  done
  echo "== GEMM f32 and bf16 (issue 2: bf16 at least 1.6x our f32)"
  for t in 1 2; do
    .device/cpu/gemm_table --bf16 --bt --threads $t 2>&1 | tee -a "$out/gemm_bf16.txt" || rc=1
  done
  echo "== BERT-base inference beside torch (issue 5: f32 1.25x torch, bf16 2x torch f32)"
  for t in 1 2; do
    .device/cpu/infer --threads $t --reps 5 --runs base:1x128,base:8x128 >>"$out/infer.jsonl" || rc=1
    .device/cpu/infer --threads $t --reps 5 --runs base:1x128,base:8x128 --bf16 >>"$out/infer.jsonl" || rc=1
    python3 scripts/bench_inference_torch.py none $t 5 base:1x128,base:8x128 2>/dev/null >>"$out/infer.jsonl" || rc=1
  done
  python3 - "$out/infer.jsonl" <<'PY'
import json, sys
r = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        j = json.loads(line)
        r[(j["model"], j["batch"], j["seq"], j["threads"], j["impl"])] = j["best_ms"]
print(f"\n{'BERT-base':<16}{'threads':>8}{'ours ms':>9}{'bf16 ms':>9}{'torch ms':>9}{'torch/ours':>11}{'torch/bf16':>11}")
for (m, b, s, t) in sorted({k[:4] for k in r}):
    o, h, p = (r.get((m, b, s, t, i), float("nan")) for i in ("ours", "ours bf16", "torch"))
    print(f"{f'{b}x{s}':<16}{t:>8}{o:>9.1f}{h:>9.1f}{p:>9.1f}{p / o:>11.2f}{p / h:>11.2f}")
PY
  echo "rc: $rc"
  exit $rc
fi

if [[ $stage == all || $stage == tests ]]; then
  echo "== GPU check: every kernel against the CPU engine"
  .device/cuda_ops --test-threads=1 --nocapture >"$out/cuda_ops.log" 2>&1 || rc=1
  grep -E "rel |differ|^test |panicked|test result" "$out/cuda_ops.log" | tail -n 400 >"$out/cuda_ops.summary"
  grep -E "^test |panicked|test result" "$out/cuda_ops.log" | tail -n 30
  echo "== GPU check: the pretraining step on every device against the tape"
  .device/step_cuda --test-threads=1 --nocapture >"$out/step_cuda.log" 2>&1 || rc=1
  grep -E "^test |panicked|test result|tape|step [0-9]+:" "$out/step_cuda.log" | tail -n 60
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
if [[ $stage == finetune ]]; then
  echo "== fine-tuning step, each family (seconds per step, median of steps 2..6)"
  for model in minilm bert-base; do
    for fam in seq-cls token-cls qa; do
      seq=128; [[ $fam == qa ]] && seq=384
      for d in cuda cuda-bf16; do
        DEVICE=$d .device/finetune_step "$fam" "$model" 32 "$seq" 6 >>"$out/finetune_ours.jsonl" 2>>"$out/finetune.err" || rc=1
      done
      for amp in "" bf16; do
        DEVICE=cuda AMP=$amp python3 scripts/bench_finetune_torch.py "$fam" "$model" 32 "$seq" 6 1 >>"$out/finetune_torch.jsonl" 2>>"$out/finetune.err" || rc=1
      done
    done
  done
  grep -iE "error|panick" "$out/finetune.err" | head -5 || true
  python3 - "$out/finetune_ours.jsonl" "$out/finetune_torch.jsonl" <<'PY'
import json, sys
rows = {}
for p in sys.argv[1:]:
    for line in open(p):
        if line.startswith("{"):
            r = json.loads(line)
            rows[(r["family"], r["model"], r["seq"], r["impl"], r["device"])] = r["step_s"]
nan = float("nan")
print(f"\n{'family':<10}{'model':<10}{'batch x seq':>12}{'ours f32':>10}{'ours bf16':>10}{'torch fp32':>11}{'torch bf16':>11}"
      f"{'torch fp32 / ours f32':>23}{'torch best / ours best':>24}")
for (fam, model, seq) in sorted({k[:3] for k in rows}):
    g = lambda i, d: rows.get((fam, model, seq, i, d), nan)
    of, ob, tf, tb = g("ours", "cuda"), g("ours", "cuda-bf16"), g("torch", "cuda"), g("torch", "cuda-bf16")
    print(f"{fam:<10}{model:<10}{'32 x ' + str(seq):>12}{of:>10.4f}{ob:>10.4f}{tf:>11.4f}{tb:>11.4f}"
          f"{tf / of:>23.2f}{min(tf, tb) / min(of, ob):>24.2f}")
PY
fi
echo "rc: $rc"
exit $rc
