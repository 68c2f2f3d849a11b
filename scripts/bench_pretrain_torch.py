"""The PyTorch side of scripts/bench-pretrain: transformers' BertForPreTraining (BERT-Mini: 4
layers, hidden 256, 4 heads, vocabulary 30522), batch 32 x 128, 20 masked positions per sequence,
AdamW + clipping, fp32, CPU. Prints one JSON line: median step seconds over steps 2..N, tokens/s,
peak RSS. usage: bench_pretrain_torch.py THREADS STEPS"""
import json, resource, sys, time
import torch
from transformers import BertConfig, BertForPreTraining

threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=1024, attn_implementation="sdpa")
m = BertForPreTraining(cfg).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
B, T = 32, 128
times = []
for s in range(steps):
    ids = torch.randint(1000, 30000, (B, T))
    labels = torch.full((B, T), -100)
    pos = torch.stack([torch.randperm(T - 2)[:20] + 1 for _ in range(B)])
    labels.scatter_(1, pos, torch.randint(1000, 30000, (B, 20)))
    t = time.perf_counter()
    out = m(input_ids=ids, token_type_ids=torch.zeros_like(ids), labels=labels, next_sentence_label=torch.randint(0, 2, (B,)))
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - t)
med = sorted(times[1:])[len(times[1:]) // 2]
print(json.dumps({"impl": "torch", "threads": threads, "step_s": round(med, 3), "tokens_per_s": round(B * T / med),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)
