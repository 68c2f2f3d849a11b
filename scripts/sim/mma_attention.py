#!/usr/bin/env python3
"""A lane-by-lane simulation (NumPy) of attn_fwd_mma's fragment logic (kernels/cuda/attention.cu):
ldmatrix x4 / x4.trans addressing, mma.m16n8k16 fragment layouts, the P-from-S register reuse,
the quad reductions and the log2-domain online softmax, for one warp (16 query rows) over
several key tiles with a key-length mask. It checks the index arithmetic of the kernel on a
machine without a GPU: if an address or a fragment position is wrong, the result is not
softmax(Q K^T / sqrt(D)) V. Run: python3 scripts/sim/mma_attention.py (needs numpy)."""
import numpy as np

def ldsm_x4(smem, addr_of_lane, trans=False):
    """ldmatrix.m8n8.x4: lane L gives the (row, col) start of row L % 8 of matrix L // 8.
    Returns regs[lane][i] = (lo, hi) elements of matrix i for that lane."""
    mats = []
    for i in range(4):
        rows = [addr_of_lane(8 * i + r) for r in range(8)]
        mats.append(np.array([[smem[r][c + j] for j in range(8)] for (r, c) in rows]))
    regs = []
    for lane in range(32):
        g, t = lane // 4, lane % 4
        if not trans:
            regs.append([(m[g][2 * t], m[g][2 * t + 1]) for m in mats])
        else:
            regs.append([(m[2 * t][g], m[2 * t + 1][g]) for m in mats])
    return regs

def mma(d, a, b0, b1):
    """d[lane] (4 floats) += A(16x16) B(16x8) with the PTX fragment layouts; a[lane] = 4 pairs."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for (r, c), pair in zip([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)], a[lane]):
            A[r][c], A[r][c + 1] = pair
        B[2 * t][g], B[2 * t + 1][g] = b0[lane]
        B[2 * t + 8][g], B[2 * t + 9][g] = b1[lane]
    C = A @ B
    for lane in range(32):
        g, t = lane // 4, lane % 4
        d[lane] += np.array([C[g][2 * t], C[g][2 * t + 1], C[g + 8][2 * t], C[g + 8][2 * t + 1]])

def simulate(D=64, BK=64, nkeys=150, scale=0.125, seed=0):
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((16, D)); K = rng.standard_normal((nkeys, D)); V = rng.standard_normal((nkeys, D))
    KC, NT, DT = D // 16, BK // 8, D // 8
    sl2 = scale * 1.4426950408889634
    qa = [ldsm_x4(Q, lambda L, kc=kc: ((L & 15), kc * 16 + (L >> 4) * 8)) for kc in range(KC)]
    acc = np.zeros((32, DT, 4)); m = np.full((32, 2), -np.inf); l = np.zeros((32, 2))
    for j0 in range(0, nkeys, BK):
        Ks = np.zeros((BK, D)); Vs = np.zeros((BK, D))
        n = min(BK, nkeys - j0); Ks[:n] = K[j0:j0 + n]; Vs[:n] = V[j0:j0 + n]
        s = np.zeros((32, NT, 4))
        for kc in range(KC):
            for np_ in range(NT // 2):
                b = ldsm_x4(Ks, lambda L: (np_ * 16 + (L >> 4) * 8 + (L & 7), kc * 16 + ((L >> 3) & 1) * 8))
                a = [qa[kc][lane] for lane in range(32)]
                d0 = s[:, 2 * np_, :].copy(); mma(d0, a, [b[x][0] for x in range(32)], [b[x][1] for x in range(32)])
                d1 = s[:, 2 * np_ + 1, :].copy(); mma(d1, a, [b[x][2] for x in range(32)], [b[x][3] for x in range(32)])
                s[:, 2 * np_, :], s[:, 2 * np_ + 1, :] = d0, d1
        for lane in range(32):
            t = lane % 4
            for nt in range(NT):
                for e in range(4):
                    key = j0 + nt * 8 + 2 * t + (e & 1)
                    s[lane][nt][e] = s[lane][nt][e] * sl2 if key < nkeys else -np.inf
        mt = np.array([[max(s[lane][nt][e] for nt in range(NT) for e in range(4) if e >> 1 == r) for r in range(2)] for lane in range(32)])
        for x in (1, 2):  # quad shuffles
            mt = np.maximum(mt, mt[[lane ^ x for lane in range(32)]])
        m_new = np.maximum(m, mt)
        corr = np.where(m == -np.inf, 0.0, np.exp2(m - m_new)); m = m_new; l *= corr
        p = np.zeros_like(s)
        for lane in range(32):
            for nt in range(NT):
                for e in range(4):
                    r = e >> 1
                    p[lane][nt][e] = 0.0 if s[lane][nt][e] == -np.inf else np.exp2(s[lane][nt][e] - m[lane][r])
                    l[lane][r] += p[lane][nt][e]
        acc[:, :, 0:2] *= corr[:, 0:1, None]; acc[:, :, 2:4] *= corr[:, 1:2, None]
        for kc in range(BK // 16):
            pa = [[(p[L][2 * kc][0], p[L][2 * kc][1]), (p[L][2 * kc][2], p[L][2 * kc][3]),
                   (p[L][2 * kc + 1][0], p[L][2 * kc + 1][1]), (p[L][2 * kc + 1][2], p[L][2 * kc + 1][3])] for L in range(32)]
            for dp in range(DT // 2):
                b = ldsm_x4(Vs, lambda L: (kc * 16 + ((L >> 3) & 1) * 8 + (L & 7), dp * 16 + (L >> 4) * 8), trans=True)
                d0 = acc[:, 2 * dp, :].copy(); mma(d0, pa, [b[x][0] for x in range(32)], [b[x][1] for x in range(32)])
                d1 = acc[:, 2 * dp + 1, :].copy(); mma(d1, pa, [b[x][2] for x in range(32)], [b[x][3] for x in range(32)])
                acc[:, 2 * dp, :], acc[:, 2 * dp + 1, :] = d0, d1
    for x in (1, 2):
        l = l + l[[lane ^ x for lane in range(32)]]
    O = np.zeros((16, D)); lse = np.zeros(16)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for r in range(2):
            for dt in range(DT):
                O[g + 8 * r][dt * 8 + 2 * t] = acc[lane][dt][2 * r] / l[lane][r]
                O[g + 8 * r][dt * 8 + 2 * t + 1] = acc[lane][dt][2 * r + 1] / l[lane][r]
            lse[g + 8 * r] = (m[lane][r] + np.log2(l[lane][r])) * 0.6931471805599453
    S = Q @ K.T * scale
    P = np.exp(S - S.max(1, keepdims=True)); want = (P / P.sum(1, keepdims=True)) @ V
    want_lse = np.log(np.exp(S - S.max(1, keepdims=True)).sum(1)) + S.max(1)
    err = np.abs(O - want).max(); lerr = np.abs(lse - want_lse).max()
    print(f"D={D} BK={BK} keys={nkeys}: max |O - ref| = {err:.2e}, max |lse - ref| = {lerr:.2e}")
    assert err < 1e-9 and lerr < 1e-9
    return err

def a_from_acc(acc, kc):
    """The A fragments (k = 16 columns kc*16..) from accumulator tiles 2kc, 2kc+1 (the P-as-A trick)."""
    return [[(acc[L][2 * kc][0], acc[L][2 * kc][1]), (acc[L][2 * kc][2], acc[L][2 * kc][3]),
             (acc[L][2 * kc + 1][0], acc[L][2 * kc + 1][1]), (acc[L][2 * kc + 1][2], acc[L][2 * kc + 1][3])] for L in range(32)]

def mma_tiles(acc, a, b, t0):
    """acc[:, t0] and acc[:, t0+1] += A B for the x4 B registers b (b0 b1 of two n-tiles)."""
    for j in range(2):
        d = acc[:, t0 + j, :].copy()
        mma(d, a, [b[x][2 * j] for x in range(32)], [b[x][2 * j + 1] for x in range(32)])
        acc[:, t0 + j, :] = d

def reference_grads(Q, K, V, dO, nkeys, scale):
    S = Q @ K[:nkeys].T * scale
    P = np.exp(S - S.max(1, keepdims=True)); P /= P.sum(1, keepdims=True)
    O = P @ V[:nkeys]
    lse = np.log(np.exp(S - S.max(1, keepdims=True)).sum(1)) + S.max(1)
    dP = dO @ V[:nkeys].T
    Dsum = (dO * O).sum(1)
    dS = P * (dP - Dsum[:, None])
    dQ = dS @ K[:nkeys] * scale
    dK = np.zeros_like(K); dV = np.zeros_like(V)
    dK[:nkeys] = dS.T @ Q * scale; dV[:nkeys] = P.T @ dO
    return lse, Dsum, dQ, dK, dV

def simulate_dkdv(D=64, nq=80, nkeys=40, scale=0.125, seed=1):
    """One warp (16 keys, here keys 0..15 of the block) of attn_bwd_dkdv_mma over query tiles of 64."""
    rng = np.random.default_rng(seed)
    Q, K, V, dO = (rng.standard_normal((n, D)) for n in (nq, nkeys, nkeys, nq))
    lse, Dsum, _, dK_ref, dV_ref = reference_grads(Q, K, V, dO, nkeys, scale)
    BQ, KC, QT, DT = 64, D // 16, 64 // 8, D // 8
    Ks = np.zeros((16, D)); Vs = np.zeros((16, D)); m = min(16, nkeys); Ks[:m] = K[:m]; Vs[:m] = V[:m]
    ka = [ldsm_x4(Ks, lambda L, kc=kc: ((L & 15), kc * 16 + (L >> 4) * 8)) for kc in range(KC)]
    va = [ldsm_x4(Vs, lambda L, kc=kc: ((L & 15), kc * 16 + (L >> 4) * 8)) for kc in range(KC)]
    gk = np.zeros((32, DT, 4)); gv = np.zeros((32, DT, 4))
    for i0 in range(0, nq, BQ):
        Qs = np.zeros((BQ, D)); dOs = np.zeros((BQ, D)); n = min(BQ, nq - i0)
        Qs[:n] = Q[i0:i0 + n]; dOs[:n] = dO[i0:i0 + n]
        lse_s = np.full(BQ, -np.inf); dsum_s = np.zeros(BQ); lse_s[:n] = lse[i0:i0 + n]; dsum_s[:n] = Dsum[i0:i0 + n]
        st = np.zeros((32, QT, 4)); dpt = np.zeros((32, QT, 4))
        for kc in range(KC):
            for np_ in range(QT // 2):
                b = ldsm_x4(Qs, lambda L: (np_ * 16 + (L >> 4) * 8 + (L & 7), kc * 16 + ((L >> 3) & 1) * 8))
                mma_tiles(st, [ka[kc][L] for L in range(32)], b, 2 * np_)
                b = ldsm_x4(dOs, lambda L: (np_ * 16 + (L >> 4) * 8 + (L & 7), kc * 16 + ((L >> 3) & 1) * 8))
                mma_tiles(dpt, [va[kc][L] for L in range(32)], b, 2 * np_)
        for L in range(32):
            g, t = L // 4, L % 4
            for nt in range(QT):
                for e in range(4):
                    key = g + 8 * (e >> 1); qi = nt * 8 + 2 * t + (e & 1)
                    p = np.exp(scale * st[L][nt][e] - lse_s[qi]) if key < nkeys and lse_s[qi] != -np.inf else 0.0
                    st[L][nt][e], dpt[L][nt][e] = p, p * (dpt[L][nt][e] - dsum_s[qi])
        for kc in range(BQ // 16):
            pa, da = a_from_acc(st, kc), a_from_acc(dpt, kc)
            for dp2 in range(DT // 2):
                b = ldsm_x4(dOs, lambda L: (kc * 16 + ((L >> 3) & 1) * 8 + (L & 7), dp2 * 16 + (L >> 4) * 8), trans=True)
                mma_tiles(gv, pa, b, 2 * dp2)
                b = ldsm_x4(Qs, lambda L: (kc * 16 + ((L >> 3) & 1) * 8 + (L & 7), dp2 * 16 + (L >> 4) * 8), trans=True)
                mma_tiles(gk, da, b, 2 * dp2)
    dK = np.zeros((16, D)); dV = np.zeros((16, D))
    for L in range(32):
        g, t = L // 4, L % 4
        for r in range(2):
            for dt in range(DT):
                for c in range(2):
                    dK[g + 8 * r][dt * 8 + 2 * t + c] = scale * gk[L][dt][2 * r + c]
                    dV[g + 8 * r][dt * 8 + 2 * t + c] = gv[L][dt][2 * r + c]
    # Keys past nkeys (padding) must get zero gradients.
    err = max(np.abs(dK[:m] - dK_ref[:m]).max(), np.abs(dV[:m] - dV_ref[:m]).max(),
              np.abs(dK[m:]).max(initial=0), np.abs(dV[m:]).max(initial=0))
    print(f"dkdv D={D} queries={nq} keys={nkeys}: max |dK, dV - ref| = {err:.2e}")
    assert err < 1e-9

def simulate_dq(D=64, nq=16, nkeys=150, scale=0.125, seed=2):
    """One warp (16 queries) of attn_bwd_dq_mma over key tiles of 64."""
    rng = np.random.default_rng(seed)
    Q, K, V, dO = (rng.standard_normal((n, D)) for n in (nq, nkeys, nkeys, nq))
    lse, Dsum, dQ_ref, _, _ = reference_grads(Q, K, V, dO, nkeys, scale)
    BK, KC, NT, DT = 64, D // 16, 64 // 8, D // 8
    qa = [ldsm_x4(Q, lambda L, kc=kc: ((L & 15), kc * 16 + (L >> 4) * 8)) for kc in range(KC)]
    oa = [ldsm_x4(dO, lambda L, kc=kc: ((L & 15), kc * 16 + (L >> 4) * 8)) for kc in range(KC)]
    gq = np.zeros((32, DT, 4))
    for j0 in range(0, nkeys, BK):
        Ks = np.zeros((BK, D)); Vs = np.zeros((BK, D)); n = min(BK, nkeys - j0); Ks[:n] = K[j0:j0 + n]; Vs[:n] = V[j0:j0 + n]
        s = np.zeros((32, NT, 4)); dp = np.zeros((32, NT, 4))
        for kc in range(KC):
            for np_ in range(NT // 2):
                b = ldsm_x4(Ks, lambda L: (np_ * 16 + (L >> 4) * 8 + (L & 7), kc * 16 + ((L >> 3) & 1) * 8))
                mma_tiles(s, [qa[kc][L] for L in range(32)], b, 2 * np_)
                b = ldsm_x4(Vs, lambda L: (np_ * 16 + (L >> 4) * 8 + (L & 7), kc * 16 + ((L >> 3) & 1) * 8))
                mma_tiles(dp, [oa[kc][L] for L in range(32)], b, 2 * np_)
        for L in range(32):
            g, t = L // 4, L % 4
            for nt in range(NT):
                for e in range(4):
                    r = e >> 1; row = g + 8 * r; key = j0 + nt * 8 + 2 * t + (e & 1)
                    p = np.exp(scale * s[L][nt][e] - lse[row]) if key < nkeys else 0.0
                    s[L][nt][e] = p * (dp[L][nt][e] - Dsum[row])
        for kc in range(BK // 16):
            a = a_from_acc(s, kc)
            for dp2 in range(DT // 2):
                b = ldsm_x4(Ks, lambda L: (kc * 16 + ((L >> 3) & 1) * 8 + (L & 7), dp2 * 16 + (L >> 4) * 8), trans=True)
                mma_tiles(gq, a, b, 2 * dp2)
    dQ = np.zeros((16, D))
    for L in range(32):
        g, t = L // 4, L % 4
        for r in range(2):
            for dt in range(DT):
                for c in range(2):
                    dQ[g + 8 * r][dt * 8 + 2 * t + c] = scale * gq[L][dt][2 * r + c]
    err = np.abs(dQ - dQ_ref).max()
    print(f"dq   D={D} keys={nkeys}: max |dQ - ref| = {err:.2e}")
    assert err < 1e-9

if __name__ == "__main__":
    for D, BK, n in [(64, 64, 150), (32, 64, 64), (128, 32, 40), (64, 64, 1)]:
        simulate(D, BK, n)
    for D in (32, 64):
        simulate_dkdv(D, nq=80, nkeys=40)
        simulate_dkdv(D, nq=64, nkeys=9)
        simulate_dq(D, nkeys=150)
        simulate_dq(D, nkeys=5)
    print("fragment logic OK")
