"""The PyTorch side of scripts/bench-inference: transformers' BertModel (SDPA attention, CPU,
inference_mode) on the same shapes, printing the same JSON lines as benches/src/bin/infer.rs.
usage: bench_inference_torch.py MINILM_DIR THREADS REPS RUNS"""
import json, sys, time
import torch
from transformers import BertConfig, BertModel

minilm_dir, threads, reps, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
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
    m = models[name]
    ids = (1000 + (torch.arange(b * s) * 7919) % 19000).reshape(b, s)
    times = []
    with torch.inference_mode():
        m(input_ids=ids)
        for _ in range(reps):
            t = time.perf_counter()
            m(input_ids=ids)
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"impl": "torch", "model": name, "batch": b, "seq": s, "threads": threads,
                      "best_ms": round(times[0], 2), "median_ms": round(times[len(times) // 2], 2)}), flush=True)
