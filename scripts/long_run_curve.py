"""The long run's curve as a markdown table from `bert pretrain`'s metrics.jsonl: for each
held-out evaluation, the step, minutes, tokens seen, training loss (mean of the last 20 steps),
held-out MLM accuracy (beside always answering the most frequent masked token), held-out MLM
loss and NSP accuracy; then the throughput.
Usage: python3 scripts/long_run_curve.py METRICS.jsonl MODEL DEVICE BATCH"""
import json
import sys

path, model, device, batch = sys.argv[1:5]
steps, evals = [], []
for line in open(path):
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        continue  # a line cut short by an interrupted run
    (evals if "eval_mlm_accuracy" in r else steps).append(r)
if not steps:
    sys.exit(f"{path}: no training steps recorded")
by_step = {r["step"]: r for r in steps}
print(f"# Long run: {model} on {device}, batch {batch}\n")
print("| step | minutes | tokens (M) | training loss | held-out MLM accuracy | most frequent token | held-out MLM loss | NSP accuracy |")
print("|---|---|---|---|---|---|---|---|")
for e in evals:
    s = e["step"]
    recent = [by_step[k]["loss"] for k in range(max(1, s - 19), s + 1) if k in by_step]
    r = by_step.get(s, {})
    secs = r.get("seconds", float("nan"))
    toks = r.get("tokens_per_second", 0) * secs / 1e6 if r else float("nan")
    print(f"| {s} | {secs / 60:.1f} | {toks:.1f} | {sum(recent) / max(1, len(recent)):.3f} | "
          f"{e['eval_mlm_accuracy']:.3f} | {e['majority_accuracy']:.3f} | {e['eval_mlm_loss']:.3f} | {e['eval_nsp_accuracy']:.3f} |")
last = steps[-1]
tail = [r["step_seconds"] for r in steps[len(steps) // 2:]]
tail.sort()
print(f"\n{len(steps)} steps in {last['seconds'] / 60:.1f} minutes; {last['tokens_per_second']:.0f} real tokens/s "
      f"overall, median step {tail[len(tail) // 2] * 1e3:.1f} ms over the second half.")
