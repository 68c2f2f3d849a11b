#!/usr/bin/env python3
"""Side-by-side GEMM table, one run on one machine: ours, the `gemm` crate (x86-v4 feature) and
`matrixmultiply` (timed interleaved inside `gemm_table`), plus MKL (`mkl` wheel, cblas_sgemm via
ctypes: the library behind torch.mm on x86) and OpenBLAS (`scipy-openblas32`), 1 and 2 threads.

Every library's result is checked against numpy's float64 product before it is timed.
Prints a markdown table of GFLOP/s and our ratio to the best peer.

Usage: scripts/bench_gemm_peers.py [--quick]      (run through scripts/bench-gemm, which
installs the Python side into .cache/bench-venv and builds the Rust side)
"""
import ctypes, glob, json, os, subprocess, sys, tempfile, time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
          (128, 768, 768), (128, 768, 3072), (128, 3072, 768), (4096, 768, 768)]
ROW_MAJOR, NO_TRANS = 101, 111


def load_mkl():
    lib = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))[0]
    mkl = ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    return mkl, mkl.cblas_sgemm, lambda n: mkl.MKL_Set_Num_Threads(ctypes.c_int(n))


def load_openblas():
    import scipy_openblas32 as so
    lib = glob.glob(os.path.join(so.get_lib_dir(), "*.so"))[0]
    ob = ctypes.CDLL(lib)
    return ob, ob.scipy_cblas_sgemm, lambda n: ob.scipy_openblas_set_num_threads(ctypes.c_int(n))


def sgemm_call(fn, a, b, c):
    m, k = a.shape
    n = b.shape[1]
    f = ctypes.c_float
    p = lambda x: x.ctypes.data_as(ctypes.c_void_p)
    fn(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, f(1.0), p(a), k, p(b), n, f(0.0), p(c), n)


def race(fns, min_secs):
    for f in fns:
        f()
    best = [float("inf")] * len(fns)
    start, rounds = time.perf_counter(), 0
    while rounds < 5 or time.perf_counter() - start < min_secs:
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
        rounds += 1
    return best


def main():
    quick = "--quick" in sys.argv
    peers = {"MKL": load_mkl(), "OpenBLAS": load_openblas()}
    rows = {}
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        for name, (_, _, set_threads) in peers.items():
            set_threads(threads)
        for (m, k, n) in SHAPES:
            if quick and m * n * k > 1 << 28:
                continue
            a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
            b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
            want = a.astype(np.float64) @ b.astype(np.float64)
            cs = {name: np.zeros((m, n), np.float32) for name in peers}
            fns = []
            for name, (_, fn, _) in peers.items():
                sgemm_call(fn, a, b, cs[name])
                err = np.max(np.abs(cs[name] - want) / (1 + np.abs(want)))
                assert err < 1e-4, f"{name} wrong at {m}x{k}x{n}: {err}"
                fns.append(lambda fn=fn, c=cs[name]: sgemm_call(fn, a, b, c))
            secs = 1.0 if quick else (6.0 if m * n * k > 1 << 30 else 3.0)
            t = race(fns, secs)
            flops = 2.0 * m * n * k
            for name, ti in zip(peers, t):
                rows.setdefault((m, k, n, threads), {})[name] = flops / ti / 1e9
    # The Rust side: one process per thread count (matrixmultiply reads its thread count once).
    exe = os.path.join(ROOT, "target", "release", "gemm_table")
    for threads in (1, 2):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            cmd = [exe, "--threads", str(threads), "--json", tmp.name] + (["--quick"] if quick else [])
            subprocess.run(cmd, check=True, stdout=sys.stderr)
            for r in json.load(open(tmp.name)):
                d = rows.setdefault((r["m"], r["k"], r["n"], threads), {})
                d.update({"ours": r["ours"], "gemm crate": r["gemm"], "matrixmultiply": r["matrixmultiply"]})
    cols = ["ours", "gemm crate", "matrixmultiply", "MKL", "OpenBLAS"]
    print("| M x K x N | threads | " + " | ".join(cols) + " | ours / best peer |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for (m, k, n, threads), d in sorted(rows.items(), key=lambda kv: (kv[0][3], SHAPES.index(kv[0][:3]))):
        if "ours" not in d:
            continue
        best_peer = max(v for c, v in d.items() if c != "ours")
        cells = " | ".join(f"{d.get(c, float('nan')):.1f}" for c in cols)
        print(f"| {m}x{k}x{n} | {threads} | {cells} | {d['ours'] / best_peer:.2f} |")


if __name__ == "__main__":
    main()
