"""The PyTorch side of scripts/bench-inference: transformers' BertModel (SDPA attention, CPU,
inference_mode) on the same shapes, printing the same JSON lines as benches/src/bin/infer.rs.
usage: bench_inference_torch.py MINILM_DIR THREADS REPS RUNS [f32|bf16-autocast|bf16-weights]
bf16-autocast: torch.autocast("cpu", torch.bfloat16) (bf16 GEMMs through oneDNN, the rest as
autocast decides); bf16-weights: the model cast to bfloat16 (every op in bf16)."""
import contextlib, json, sys, time
import torch
from transformers import BertConfig, BertModel

minilm_dir, threads, reps, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
mode = sys.argv[5] if len(sys.argv) > 5 else "f32"
assert mode in ("f32", "bf16-autocast", "bf16-weights"), mode
tag = "torch" if mode == "f32" else "torch " + mode
torch.set_num_threads(threads)
models = {}
for run in runs.split(","):
    name, shape = run.split(":")
    b, s = map(int, shape.split("x"))
    if name not in models:
        if name == "minilm":
            models[name] = BertModel.from_pretrained(minilm_dir, attn_implementation="sdpa").eval()
        else:
            torch.manual_seed(1)
            models[name] = BertModel(BertConfig(attn_implementation="sdpa")).eval()
        if mode == "bf16-weights":
            models[name] = models[name].to(torch.bfloat16)
    m = models[name]
    ids = (1000 + (torch.arange(b * s) * 7919) % 19000).reshape(b, s)
    times = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16-autocast" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        m(input_ids=ids)
        for _ in range(reps):
            t = time.perf_counter()
            m(input_ids=ids)
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"impl": tag, "model": name, "batch": b, "seq": s, "threads": threads,
                      "best_ms": round(times[0], 2), "median_ms": round(times[len(times) // 2], 2)}), flush=True)
