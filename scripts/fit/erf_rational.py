#!/usr/bin/env python3
"""Fits the rational approximation of erf that the CPU kernels use (engine/src/simd.rs, `erf`):

    erf(z) ~= z P(z^2) / Q(z^2)   on 0 <= z <= 4,   P and Q of degree 5, Q(0) = 1,

with z clamped to [-4, 4] first (erf(4) = 1 - 1.5e-8 rounds to 1 in f32). Why a rational: the
kernel it replaces (Abramowitz-Stegun 7.1.26: a division, a polynomial and an exp) is one long
chain of dependent operations, ~90 cycles deep; the FP scheduler holds only a couple of such
chains, so GELU ran at ~32 cycles per 8 floats. This one is 2 clamps, 6 FMAs (P and Q side by
side) and a division: about 40 cycles deep and half the operations.

Method: minimise max |z P/Q - erf(z)| (absolute error: GELU adds erf to 1) over 6000 Chebyshev
points. Each iteration solves the linearised problem z P(t) - erf(z) Q(t) = erf(z) by weighted
least squares, weights 1/|Q| from the previous iterate (Loeb) times Lawson's weights (multiplied
by each point's error, which drives the solution towards equal ripple). The variable is scaled to
[0, 1] while fitting and the coefficients scaled back for t = z^2. Then the f32 evaluation the
kernel does (Horner with FMA, emulated with f64 products rounded to f32) is checked on 400,001
points. Needs numpy: python3 scripts/fit/erf_rational.py
"""
import math
import numpy as np

ZMAX, NP, NQ = 4.0, 5, 5

def fit(f, zmax, n_p, n_q, iters=60, n=6000):
    z = zmax * (1 - np.cos(np.linspace(0, np.pi, n))) / 2
    z = z[1:]
    fz = np.array([f(v) for v in z])
    sc = zmax * zmax
    s = z * z / sc
    wq, wl, best = np.ones_like(z), np.ones_like(z), None
    for _ in range(iters):
        a = np.concatenate([z[:, None] * s[:, None] ** np.arange(n_p + 1),
                            -fz[:, None] * s[:, None] ** np.arange(1, n_q + 1)], axis=1)
        w = wl / wq
        c, *_ = np.linalg.lstsq(a * w[:, None], fz * w, rcond=None)
        p, q = c[:n_p + 1], np.concatenate([[1.0], c[n_p + 1:]])
        pv, qv = np.polyval(p[::-1], s), np.polyval(q[::-1], s)
        err = z * pv / qv - fz
        m = np.abs(err).max()
        if best is None or m < best[0]:
            best = (m, p.copy(), q.copy())
        wq = np.abs(qv)
        wl = wl * (np.abs(err) + 1e-3 * m)
        wl /= wl.mean()
    m, p, q = best
    return m, p / sc ** np.arange(n_p + 1), q / sc ** np.arange(n_q + 1)

def f32(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)

def kernel_f32(p, q, x):
    """The kernel's arithmetic: clamp, t = z*z, Horner with fused multiply-adds, z*P / Q."""
    z = f32(np.clip(x, -ZMAX, ZMAX))
    t = f32(z * z)
    pv, qv = f32(p[-1]) * np.ones_like(z), f32(q[-1]) * np.ones_like(z)
    for c in p[-2::-1]:
        pv = f32(pv * t + f32(c))  # one rounding per FMA
    for c in q[-2::-1]:
        qv = f32(qv * t + f32(c))
    return np.clip(f32(f32(z * pv) / qv), -1.0, 1.0)

m, p, q = fit(math.erf, ZMAX, NP, NQ)
xs = np.linspace(-5, 5, 400001)
err = np.abs(kernel_f32(p, q, xs) - np.array([math.erf(v) for v in xs])).max()
print(f"degree {NP}/{NQ} on [0, {ZMAX}]: max error in f64 {m:.2e}, as the kernel computes it in f32 {err:.2e}")
for name, cs in (("P", p), ("Q", q)):
    print(f"{name}: [" + ", ".join(repr(float(np.float32(c))) for c in cs) + "]")
