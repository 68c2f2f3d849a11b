"""The PyTorch side of scripts/bench-finetune: transformers' BertForSequenceClassification (3
labels), BertForTokenClassification (9 tags) or BertForQuestionAnswering with random weights of
the named shape (minilm: 6 layers x 384, 12 heads; bert-base: 12 x 768), random full-length
sequences, AdamW + clipping, fp32, CPU, dropout on (train mode). Prints one JSON line: median step
seconds over steps 2..N, tokens/s, peak RSS.
With LENGTHS (a file of sequence lengths, one per line, a real data set's, capped at SEQ), each
batch is padded to its longest sequence (HF's DataCollatorWithPadding, dynamic padding: PyTorch's
best here) or, with PAD=max_length in the environment, to SEQ (run_glue.py's default
pad_to_max_length); tokens/s counts the real tokens.
DEVICE=cuda runs it on GPU 0 (fp32; AMP=bf16 adds bf16 autocast), synchronised around each step;
peak_mib is then torch.cuda.max_memory_allocated.
usage: bench_finetune_torch.py FAMILY MODEL BATCH SEQ STEPS THREADS [LENGTHS]"""
import json, resource, sys, time
import torch
from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                          BertForTokenClassification)

import os
family, model, B, T, steps, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
lengths = [min(max(int(l), 2), T) for l in open(sys.argv[7]) if l.strip()] if len(sys.argv) > 7 else [T]
pad_max = os.environ.get("PAD") == "max_length"
dev = torch.device(os.environ.get("DEVICE", "cpu"))
amp = os.environ.get("AMP") == "bf16"
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
torch.set_num_threads(threads)
torch.manual_seed(0)
shape = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536) \
    if model == "minilm" else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, attn_implementation="sdpa", **shape)
if family == "seq-cls":
    m = BertForSequenceClassification(BertConfig(num_labels=3, **cfg.to_dict()))
elif family == "token-cls":
    m = BertForTokenClassification(BertConfig(num_labels=9, **cfg.to_dict()))
else:
    m = BertForQuestionAnswering(cfg)
m.to(dev).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-5, eps=1e-6, weight_decay=0.01)
times, tokens, at = [], [], 0
for s in range(steps):
    lens = torch.tensor([lengths[(at + i) % len(lengths)] for i in range(B)])
    at += B
    L = T if pad_max else int(lens.max())
    mask = (torch.arange(L)[None, :] < lens[:, None]).long()
    ids = torch.randint(1000, 30000, (B, L)) * mask
    ids[:, 0] = 101
    types = ((torch.arange(L)[None, :] >= (lens[:, None] // 2)).long()) * mask
    if family == "seq-cls":
        labels = {"labels": torch.randint(0, 3, (B,))}
    elif family == "token-cls":
        lab = torch.where(mask == 1, torch.randint(0, 9, (B, L)), torch.full((B, L), -100))
        lab[:, 0] = -100
        labels = {"labels": lab}
    else:
        st = (torch.rand(B) * lens).long()
        labels = {"start_positions": st, "end_positions": torch.minimum(st + torch.randint(0, 8, (B,)), lens - 1)}
    ids, types, mask = ids.to(dev), types.to(dev), mask.to(dev)
    labels = {k: v.to(dev) for k, v in labels.items()}
    sync()
    t = time.perf_counter()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        out = m(input_ids=ids, token_type_ids=types, attention_mask=mask, **labels)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    sync()
    times.append(time.perf_counter() - t)
    tokens.append(int(lens.sum()))
first = 1 if steps > 1 else 0
rest = sorted(times[first:])
med = rest[len(rest) // 2]
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else \
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"impl": "torch", "device": dev.type + ("-bf16" if amp else ""), "family": family, "model": model, "threads": threads, "batch": B, "seq": T,
                  "step_s": round(med, 4), "tokens_per_s": round(sum(tokens[first:]) / sum(times[first:])),
                  "peak_rss_mib": round(peak)}), flush=True)
