#!/usr/bin/env python3
"""torch's side of benches/src/bin/gpu_train_bench.rs: transformers' BertForPreTraining (SDPA
attention, AdamW fused, clipping at 1) trained on the same configs and the same kind of synthetic
batches (random ids, 15% of valid positions masked, random NSP labels; `padded`: 10% of the
sequences shorter, uniform in 8..S). Modes: fp32 (TF32 off), tf32, bf16 autocast, each eager; and
bf16 under torch.compile. Output lines match the Rust bench's:
`train <model> B<b> S<s> <lengths> <mode>  ms/step  tokens/s`.
`--smoke` runs one tiny config on the CPU (to check the script without a GPU)."""
import sys
import time

import torch
from transformers import BertConfig, BertForPreTraining

SMOKE = "--smoke" in sys.argv
DEV = "cpu" if SMOKE else "cuda"


def config(name, seq):
    if name == "bert-base":
        c = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                       num_attention_heads=12, intermediate_size=3072)
    elif name == "bert-mini":
        c = BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4,
                       num_attention_heads=4, intermediate_size=1024)
    else:  # smoke
        c = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128)
    c.max_position_embeddings = max(512, seq)
    return c


def batch(c, b, s, padded, g):
    lens = torch.full((b,), s)
    if padded:
        short = torch.rand(b, generator=g) < 0.1
        lens[short] = torch.randint(8, s, (int(short.sum()),), generator=g)
    pos = torch.arange(s)[None, :]
    valid = pos < lens[:, None]
    ids = torch.randint(5, c.vocab_size, (b, s), generator=g)
    ids[~valid] = 0
    types = ((pos >= (lens[:, None] // 2)) & valid).long()
    masked = (torch.rand(b, s, generator=g) < 0.15) & valid & (pos > 0)
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    ids = torch.where(masked, torch.full_like(ids, 4), ids)
    nsp = torch.randint(0, 2, (b,), generator=g)
    t = lambda x: x.to(DEV)
    return dict(input_ids=t(ids), token_type_ids=t(types), attention_mask=t(valid.long()),
                labels=t(labels), next_sentence_label=t(nsp))


def run(name, b, s, padded, mode, steps=5):
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    c = config(name, s)
    c._attn_implementation = "sdpa"
    torch.manual_seed(1)
    model = BertForPreTraining(c).to(DEV).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01,
                            fused=not SMOKE)
    g = torch.Generator().manual_seed(17)
    batches = [batch(c, b, s, padded, g) for _ in range(steps + 3)]
    amp = mode.startswith("bf16")

    def step(x):
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
            loss = model(**x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    fn = torch.compile(step) if mode == "bf16-compile" else step
    for x in batches[:3]:
        fn(x)
    if DEV == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x in batches[3:]:
        loss = fn(x)
    loss = float(loss)
    secs = time.perf_counter() - t0
    assert loss == loss, "NaN loss"
    lengths = "padded" if padded else "full"
    print(f"train {name} B{b} S{s} {lengths} {mode}  {secs * 1e3 / steps:.2f}  "
          f"{b * s * steps / secs:.0f}", flush=True)
    del model, opt, batches
    if DEV == "cuda":
        torch.cuda.empty_cache()


def infer(name, b, s, mode, reps=20):
    """BertModel forward (random weights, full-length batch): median ms of `reps` runs."""
    from transformers import BertModel
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    c = config(name, s)
    c._attn_implementation = "sdpa"
    torch.manual_seed(1)
    model = BertModel(c).to(DEV).eval()
    g = torch.Generator().manual_seed(5)
    x = batch(c, b, s, False, g)
    x = {k: x[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    fn = model
    if mode == "fp32-graphs":
        fn = torch.compile(model, mode="reduce-overhead")
    times = []
    with torch.no_grad():
        for k in range(reps + 3):
            if DEV == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(**x).last_hidden_state
            if DEV == "cuda":
                torch.cuda.synchronize()
            if k >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(f"infer {name} B{b} S{s} full {mode}  {times[len(times) // 2]:.3f}", flush=True)
    del model, fn


if SMOKE:
    run("smoke", 4, 32, True, "fp32", steps=1)
    infer("smoke", 2, 32, "fp32", reps=2)
    sys.exit(0)
for b in (1, 32):
    for mode in ["fp32", "tf32", "fp32-graphs"]:
        try:
            infer("bert-base", b, 128, mode)
        except Exception as e:
            print(f"# infer bert-base B{b} {mode}: {type(e).__name__}: {e}", flush=True)
print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}")
for name, b, s, padded in [("bert-mini", 128, 128, False), ("bert-base", 256, 128, False),
                           ("bert-base", 256, 128, True), ("bert-base", 32, 512, False)]:
    # torch.compile takes minutes per model: only on the issue's two compiled rows' configs.
    compiled = ["bf16-compile"] if (b, s, padded) == (128, 128, False) or (name, b, padded) == ("bert-base", 256, False) else []
    for mode in ["fp32", "tf32", "bf16"] + compiled:
        try:
            run(name, b, s, padded, mode)
        except Exception as e:  # a mode that fails (e.g. compile) must not hide the others
            print(f"# train {name} B{b} S{s} {mode}: {type(e).__name__}: {e}", flush=True)
