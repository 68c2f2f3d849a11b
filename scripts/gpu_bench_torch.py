"""torch's side of the GPU kernel benchmark (benches/src/bin/gpu_bench.rs): the same ops, shapes
and byte counts, timed the same way (CUDA events around 20 calls, median of 5 rounds), printing
lines with the same names, so scripts/device/gpu-check.sh can put the two side by side.
Each op is what torch runs in eager mode for the same computation (several kernels where torch
does not fuse them)."""
import torch
import torch.nn.functional as F

REPS = 20
ROWS, HID, FFN, HEADS, SEQ, VOCAB, MASKED = 128 * 128, 768, 3072, 12, 128, 30522, 2458
dev = "cuda"


def time(f):
    f()
    torch.cuda.synchronize()
    t = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(REPS):
            f()
        b.record()
        b.synchronize()
        t.append(a.elapsed_time(b) / REPS)
    return sorted(t)[2]


def bw(name, ms, nbytes):
    print(f"{name:<40} {ms:>9.4f} {nbytes / ms / 1e6:>9.1f} GB/s", flush=True)


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device=dev).manual_seed(0)
    rn = lambda *s, scale=1.0, dtype=torch.float32: (torch.randn(*s, device=dev, generator=g) * scale).to(dtype)
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}")
    n = ROWS * FFN
    big, big2, out = rn(ROWS, FFN), rn(ROWS, FFN), torch.empty(ROWS, FFN, device=dev)
    bw("copy f32 [16384,3072]", time(lambda: out.copy_(big)), 8 * n)
    bw("add f32 [16384,3072]", time(lambda: torch.add(big, big2, out=out)), 12 * n)
    bias = rn(FFN, scale=0.1)
    for kind, approx in [("Erf", "none"), ("Tanh", "tanh")]:
        bw(f"bias_gelu_fwd {kind} f32 [16384,3072]", time(lambda: F.gelu(big + bias, approximate=approx)), 8 * n)
    bw("bias_gelu_bwd Erf f32 [16384,3072]",
       time(lambda: torch.ops.aten.gelu_backward(big2, big + bias)), 12 * n)
    xb, bb = rn(ROWS, FFN, dtype=torch.bfloat16), rn(FFN, scale=0.1, dtype=torch.bfloat16)
    bw("bias_gelu_fwd Erf bf16 [16384,3072]", time(lambda: F.gelu(xb + bb)), 4 * n)
    bw("cast f32->bf16 [16384,3072]", time(lambda: big.to(torch.bfloat16)), 6 * n)
    bw("dropout p=0.1 f32 [16384,3072]", time(lambda: F.dropout(big, 0.1, training=True)), 8 * n)
    bw("column_sum (dbias) f32 [16384,3072]", time(lambda: big.sum(0)), 4 * n)
    del big, big2, out, xb

    n = ROWS * HID
    x, res, dy = rn(ROWS, HID), rn(ROWS, HID), rn(ROWS, HID)
    gamma, beta = torch.ones(HID, device=dev), rn(HID, scale=0.1)
    bw("layernorm_fwd +dropout+residual f32 [16384,768]",
       time(lambda: F.layer_norm(F.dropout(x, 0.1, training=True) + res, (HID,), gamma, beta, 1e-12)), 16 * n)
    h = F.dropout(x, 0.1, training=True) + res
    _, mean, rstd = torch.ops.aten.native_layer_norm(h, [HID], gamma, beta, 1e-12)
    bw("layernorm_bwd dx+dgamma+dbeta f32 [16384,768]",
       time(lambda: torch.ops.aten.native_layer_norm_backward(dy, h, [HID], mean, rstd, gamma, beta,
                                                               [True, True, True])), 12 * n)
    word, pos, typ = rn(VOCAB, HID), rn(512, HID), rn(2, HID)
    ids = ((torch.arange(ROWS, device=dev, dtype=torch.int64) * 2654435761) % VOCAB).view(128, SEQ)
    types = ((torch.arange(ROWS, device=dev) % SEQ) >= SEQ // 2).long().view(128, SEQ)
    positions = torch.arange(SEQ, device=dev)
    bw("bert_embed_fwd f32 [16384,768]",
       time(lambda: F.embedding(ids, word) + F.embedding(positions, pos) + F.embedding(types, typ)), 8 * n)
    del x, res, dy, h

    n = ROWS * HEADS * SEQ
    sc, dsc = rn(128, HEADS, SEQ, SEQ, scale=2.0), rn(128, HEADS, SEQ, SEQ)
    lens = 32 + torch.arange(128, device=dev) % 96
    mask = torch.where(torch.arange(SEQ, device=dev)[None, :] >= lens[:, None], -10000.0, 0.0)[:, None, None, :]
    bw("softmax_fwd masked f32 [128,12,128,128]", time(lambda: torch.softmax(sc * 0.125 + mask, -1)), 8 * n)
    p = torch.softmax(sc * 0.125 + mask, -1)
    bw("softmax_bwd f32 [128,12,128,128]",
       time(lambda: torch.ops.aten._softmax_backward_data(dsc, p, -1, torch.float32)), 12 * n)
    del sc, dsc, p

    n = MASKED * VOCAB
    logits = rn(MASKED, VOCAB, scale=2.0).requires_grad_()
    targets = (torch.arange(MASKED, device=dev) * 7919) % VOCAB

    def ce():
        logits.grad = None
        F.cross_entropy(logits, targets).backward()
    bw("cross_entropy fwd+bwd f32 [2458,30522]", time(ce), 8 * n)
    del logits

    shapes = [VOCAB * HID, 512 * HID, 2 * HID, HID, HID]
    for _ in range(12):
        shapes += [HID * HID, HID, HID * HID, HID, HID * HID, HID, HID * HID, HID, HID, HID,
                   FFN * HID, FFN, HID * FFN, HID, HID, HID]
    shapes += [HID * HID, HID, HID * HID, HID, HID, HID, VOCAB, 2 * HID, 2]
    params = [torch.nn.Parameter(rn(s, scale=0.02)) for s in shapes]
    for q in params:
        q.grad = rn(q.numel(), scale=0.01)
    opt = torch.optim.AdamW(params, lr=1e-4, eps=1e-6, weight_decay=0.01, fused=True)

    def step():
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
    total = sum(shapes)
    bw(f"adamw_multi+clip {total / 1e6:.1f}M params", time(step), 32 * total)
    del params, opt

    # Attention: every SDPA backend that accepts the inputs; the best is the one to beat.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)]
    for bsz, seq, padded in [(64, 128, False), (16, 512, False), (4, 1024, False), (64, 128, True)]:
        h, d = HEADS, 64
        q, k_, v = (rn(bsz, h, seq, d, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
        do = rn(bsz, h, seq, d, dtype=torch.bfloat16)
        mask = None
        if padded:
            lens = torch.tensor([32 + (b * 53 + 17) % 97 for b in range(bsz)], device=dev)
            mask = (torch.arange(seq, device=dev)[None, :] < lens[:, None])[:, None, None, :]
        flops = 4 * bsz * h * seq * seq * d
        tag = f"B{bsz} H{h} S{seq} D{d}" + (" padded" if padded else "")
        best = {}
        for bname, be in backends:
            try:
                with sdpa_kernel([be]):
                    fwd = lambda: F.scaled_dot_product_attention(q, k_, v, attn_mask=mask)
                    ms_f = time(lambda: fwd().detach())

                    def fb():
                        q.grad = k_.grad = v.grad = None
                        fwd().backward(do)
                    ms_b = time(fb)
            except RuntimeError:
                continue
            print(f"# sdpa {bname} {tag}: fwd {ms_f:.4f} ms, fwd+bwd {ms_b:.4f} ms")
            for key, ms in (("fwd", ms_f), ("fwd+bwd", ms_b)):
                if key not in best or ms < best[key][0]:
                    best[key] = (ms, bname)
        for key, mult in (("fwd", 1.0), ("fwd+bwd", 3.5)):
            if key in best:
                ms = best[key][0]
                print(f"{f'attention {key} bf16 {tag}':<40} {ms:>9.4f} {mult * flops / ms / 1e9:>9.1f} TFLOP/s")
        del q, k_, v, do

    for m, k, nn in [(ROWS, HID, FFN), (ROWS, FFN, HID), (ROWS, HID, HID)]:
        a, b = rn(m, k), rn(k, nn)
        c = torch.empty(m, nn, device=dev)
        for math, tf32 in [("F32", False), ("Tf32", True)]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            ms = time(lambda: torch.mm(a, b, out=c))
            print(f"{f'gemm {math} {m}x{k}x{nn}':<40} {ms:>9.4f} {2 * m * k * nn / ms / 1e9:>9.1f} TFLOP/s")
        torch.backends.cuda.matmul.allow_tf32 = False
        ab, bb = a.bfloat16(), b.bfloat16()
        cb = torch.empty(m, nn, device=dev, dtype=torch.bfloat16)
        ms = time(lambda: torch.mm(ab, bb, out=cb))
        print(f"{f'gemm Bf16 {m}x{k}x{nn}':<40} {ms:>9.4f} {2 * m * k * nn / ms / 1e9:>9.1f} TFLOP/s")


if __name__ == "__main__":
    main()
