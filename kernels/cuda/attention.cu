// Fused scaled-dot-product attention, forward and backward (FlashAttention-2's scheme): the
// score matrix never reaches device memory. This file is the reference-grade version: f32 math
// on CUDA cores, tiles in shared memory, any of f32 / bf16 storage; it is what the CPU-parity
// tests hold to 1e-5, and what the tensor-core kernels are checked against. See
// attention.notes.md for the floor, the versions and their timings.
//
// Layout. Tokens are rows. Q, K, V (and dQ, dK, dV) have `qkv_stride` elements between
// consecutive tokens, head h's D features at offset h*D: a fused QKV projection's output
// [tokens, 3*H*D] is read in place (q = base, k = base + H*D, v = base + 2*H*D), as is plain
// [tokens, H*D]. O and dO: stride `o_stride` ([tokens, H*D]: the layout the output projection
// reads). LSE and Dsum: [tokens, H] f32.
// Sequences. grid.z = sequence b: its rows are tokens starts[b] .. starts[b] + rows[b]; its
// first k_lens[b] <= rows[b] of them are valid keys. A padded batch is starts[b] = b*S,
// rows[b] = S, k_lens[b] = its length (the padded query rows still get outputs, over the valid
// keys, as BERT computes them); a packed variable-length batch (no padding at all) is
// starts = cumulative lengths, rows = k_lens = lengths.
// Dropout on the probabilities, mask element ((b*H + h)*S + i)*S + j of the CPU engine's
// counter hash with S = drop_stride (the padded length), so both devices drop the same
// elements; the backward regenerates it.
//
//   attn_fwd_T_dD:      O = softmax(scale Q K^T + key mask) V, and LSE = logsumexp per row
//   attn_bwd_pre_T:     Dsum[t, h] = sum_d dO[t, h, d] * O[t, h, d]
//   attn_bwd_dkdv_T_dD: one block per key tile: dK, dV over every query tile (no atomics)
//   attn_bwd_dq_T_dD:   one block per query tile: dQ over every key tile (no atomics)
// The backward is deterministic: every gradient element is summed by one thread in a fixed order.

constexpr int ATT_THREADS = 128;

struct AttnSeq {
    int start, rows, keys;
};

__device__ __forceinline__ AttnSeq attn_seq(const int* starts, const int* rows, const int* k_lens) {
    const int b = blockIdx.z;
    return AttnSeq{starts[b], rows[b], k_lens[b]};
}

// rows [row0, row0 + valid) of one head into a shared tile (zeros past `valid`).
template <typename T, int D, int B>
__device__ __forceinline__ void attn_load(float (&s)[B][D + 1], const T* base, int first_token,
                                          int valid, int stride, int h) {
    for (int e = threadIdx.x; e < B * D; e += ATT_THREADS) {
        const int r = e / D, d = e % D;
        s[r][d] = r < valid ? to_f(base[(i64)(first_token + r) * stride + h * D + d]) : 0.f;
    }
}

template <int D, int B>
__device__ __forceinline__ float attn_dot(const float (&a)[B][D + 1], int i,
                                          const float (&b)[B][D + 1], int j) {
    float s = 0.f;
#pragma unroll 16
    for (int d = 0; d < D; d++) s += a[i][d] * b[j][d];
    return s;
}

__device__ __forceinline__ u64 attn_drop_index(int h, int H, int i, int j, int S) {
    return (((u64)blockIdx.z * H + h) * S + i) * S + j;
}

template <typename T, int D, int B>
__device__ __forceinline__ void attn_fwd(const T* q, const T* k, const T* v, T* o, float* lse,
                                         const int* starts, const int* rows, const int* k_lens,
                                         int H, int qkv_stride, int o_stride, float scale,
                                         float p_drop, u64 seed, int drop_stride) {
    constexpr int NW = ATT_THREADS / 32, R = B / NW, C = D / 32;
    __shared__ float Qs[B][D + 1], Ks[B][D + 1], Vs[B][D + 1], Ps[B][B + 1];
    __shared__ float m_s[B], l_s[B], a_s[B];
    const AttnSeq sq = attn_seq(starts, rows, k_lens);
    const int h = blockIdx.y, i0 = blockIdx.x * B;
    if (i0 >= sq.rows) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float keep_scale = p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f;
    attn_load<T, D, B>(Qs, q, sq.start + i0, sq.rows - i0, qkv_stride, h);
    if (threadIdx.x < B) m_s[threadIdx.x] = NEG_INF, l_s[threadIdx.x] = 0.f;
    float acc[R][C];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < C; c++) acc[r][c] = 0.f;

    for (int j0 = 0; j0 < sq.keys; j0 += B) {
        __syncthreads();  // the previous tile's readers are done
        attn_load<T, D, B>(Ks, k, sq.start + j0, sq.keys - j0, qkv_stride, h);
        attn_load<T, D, B>(Vs, v, sq.start + j0, sq.keys - j0, qkv_stride, h);
        __syncthreads();
        for (int e = threadIdx.x; e < B * B; e += ATT_THREADS) {
            const int i = e / B, j = e % B;
            Ps[i][j] = j0 + j < sq.keys ? scale * attn_dot<D, B>(Qs, i, Ks, j) : NEG_INF;
        }
        __syncthreads();
        // Warp w owns rows w*R .. w*R + R - 1 from here to the end of the tile: online softmax
        // (lanes over the tile's keys), then the rescaled accumulation of P V.
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int i = warp * R + r;
            const float s = lane < B ? Ps[i][lane] : NEG_INF;
            const float m_old = m_s[i];
            const float m_new = fmaxf(m_old, warp_max(s));
            float p = (s == NEG_INF) ? 0.f : expf(s - m_new);
            const float a = (m_old == NEG_INF) ? 0.f : expf(m_old - m_new);
            const float tile_sum = warp_sum(p);
            if (p_drop > 0.f && lane < B)
                p = dropout_keep(seed, attn_drop_index(h, H, i0 + i, j0 + lane, drop_stride), p_drop)
                        ? p * keep_scale
                        : 0.f;
            if (lane < B) Ps[i][lane] = p;
            __syncwarp();
            if (lane == 0) m_s[i] = m_new, l_s[i] = l_s[i] * a + tile_sum, a_s[i] = a;
            __syncwarp();
#pragma unroll
            for (int c = 0; c < C; c++) acc[r][c] *= a;
            for (int j = 0; j < B; j++) {
                const float pj = Ps[i][j];
#pragma unroll
                for (int c = 0; c < C; c++) acc[r][c] += pj * Vs[j][lane + 32 * c];
            }
        }
    }
    __syncwarp();
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int i = warp * R + r;
        if (i0 + i >= sq.rows) continue;
        const float l = l_s[i];
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const i64 t = sq.start + i0 + i;
#pragma unroll
        for (int c = 0; c < C; c++) o[t * o_stride + h * D + lane + 32 * c] = from_f<T>(acc[r][c] * inv);
        if (lane == 0) lse[t * H + h] = l > 0.f ? m_s[i] + logf(l) : NEG_INF;
    }
}

// One warp per (token, head): Dsum = dO . O over the head's features.
template <typename T>
__device__ __forceinline__ void attn_bwd_pre(const T* o, const T* dout, float* dsum, int tokens,
                                             int H, int D, int o_stride) {
    const int w = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (w >= tokens * H) return;
    const int t = w / H, h = w % H;
    float s = 0.f;
    for (int d = lane; d < D; d += 32) {
        const i64 e = (i64)t * o_stride + h * D + d;
        s += to_f(dout[e]) * to_f(o[e]);
    }
    s = warp_sum(s);
    if (lane == 0) dsum[w] = s;
}

// Scores, probabilities and dS of one (query tile, key tile) pair into shared memory:
// Ps = dropped probabilities (for dV), dSs = P * (dP - Dsum) (for dQ and dK).
template <int D, int B>
__device__ __forceinline__ void attn_bwd_tile(
    const float (&Qs)[B][D + 1], const float (&dOs)[B][D + 1], const float (&Ks)[B][D + 1],
    const float (&Vs)[B][D + 1], const float (&lse_s)[B], const float (&dsum_s)[B],
    float (&Ps)[B][B + 1], float (&dSs)[B][B + 1], int i0, int nq, int j0, int nk, int h, int H,
    float scale, float p_drop, u64 seed, int drop_stride) {
    const float keep_scale = p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f;
    for (int e = threadIdx.x; e < B * B; e += ATT_THREADS) {
        const int i = e / B, j = e % B;
        float pd = 0.f, ds = 0.f;
        if (i0 + i < nq && j0 + j < nk && lse_s[i] != NEG_INF) {
            const float p = expf(scale * attn_dot<D, B>(Qs, i, Ks, j) - lse_s[i]);
            float dp = attn_dot<D, B>(dOs, i, Vs, j);
            pd = p;
            if (p_drop > 0.f) {
                const bool keep =
                    dropout_keep(seed, attn_drop_index(h, H, i0 + i, j0 + j, drop_stride), p_drop);
                pd = keep ? p * keep_scale : 0.f;
                dp = keep ? dp * keep_scale : 0.f;
            }
            ds = p * (dp - dsum_s[i]);
        }
        Ps[i][j] = pd;
        dSs[i][j] = ds;
    }
}

template <int B>
__device__ __forceinline__ void attn_load_rowstats(float (&lse_s)[B], float (&dsum_s)[B],
                                                   const float* lse, const float* dsum, int first,
                                                   int valid, int h, int H) {
    if (threadIdx.x < B) {
        const int r = threadIdx.x;
        lse_s[r] = r < valid ? lse[(i64)(first + r) * H + h] : NEG_INF;
        dsum_s[r] = r < valid ? dsum[(i64)(first + r) * H + h] : 0.f;
    }
}

template <typename T, int D, int B>
__device__ __forceinline__ void attn_bwd_dkdv(const T* q, const T* k, const T* v, const T* dout,
                                              const float* lse, const float* dsum, T* dk, T* dv,
                                              const int* starts, const int* rows,
                                              const int* k_lens, int H, int qkv_stride,
                                              int o_stride, float scale, float p_drop, u64 seed,
                                              int drop_stride) {
    constexpr int NW = ATT_THREADS / 32, R = B / NW, C = D / 32;
    __shared__ float Qs[B][D + 1], dOs[B][D + 1], Ks[B][D + 1], Vs[B][D + 1];
    __shared__ float Ps[B][B + 1], dSs[B][B + 1], lse_s[B], dsum_s[B];
    const AttnSeq sq = attn_seq(starts, rows, k_lens);
    const int h = blockIdx.y, j0 = blockIdx.x * B;
    if (j0 >= sq.rows) return;  // rows past the valid keys still get their (zero) gradients
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    attn_load<T, D, B>(Ks, k, sq.start + j0, sq.keys - j0, qkv_stride, h);
    attn_load<T, D, B>(Vs, v, sq.start + j0, sq.keys - j0, qkv_stride, h);
    float gk[R][C], gv[R][C];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < C; c++) gk[r][c] = 0.f, gv[r][c] = 0.f;
    if (j0 < sq.keys) {
        for (int i0 = 0; i0 < sq.rows; i0 += B) {
            __syncthreads();
            attn_load<T, D, B>(Qs, q, sq.start + i0, sq.rows - i0, qkv_stride, h);
            attn_load<T, D, B>(dOs, dout, sq.start + i0, sq.rows - i0, o_stride, h);
            attn_load_rowstats<B>(lse_s, dsum_s, lse, dsum, sq.start + i0, sq.rows - i0, h, H);
            __syncthreads();
            attn_bwd_tile<D, B>(Qs, dOs, Ks, Vs, lse_s, dsum_s, Ps, dSs, i0, sq.rows, j0, sq.keys,
                                h, H, scale, p_drop, seed, drop_stride);
            __syncthreads();
            // Warp w owns keys w*R ..: dV[j] += sum_i Pd[i, j] dO[i]; dK[j] += sum_i dS[i, j] Q[i].
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int j = warp * R + r;
                for (int i = 0; i < B; i++) {
                    const float pd = Ps[i][j], ds = dSs[i][j];
#pragma unroll
                    for (int c = 0; c < C; c++) {
                        gv[r][c] += pd * dOs[i][lane + 32 * c];
                        gk[r][c] += ds * Qs[i][lane + 32 * c];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int j = warp * R + r;
        if (j0 + j >= sq.rows) continue;
        const i64 e = (i64)(sq.start + j0 + j) * qkv_stride + h * D;
#pragma unroll
        for (int c = 0; c < C; c++) {
            dk[e + lane + 32 * c] = from_f<T>(scale * gk[r][c]);
            dv[e + lane + 32 * c] = from_f<T>(gv[r][c]);
        }
    }
}

template <typename T, int D, int B>
__device__ __forceinline__ void attn_bwd_dq(const T* q, const T* k, const T* v, const T* dout,
                                            const float* lse, const float* dsum, T* dq,
                                            const int* starts, const int* rows, const int* k_lens,
                                            int H, int qkv_stride, int o_stride, float scale,
                                            float p_drop, u64 seed, int drop_stride) {
    constexpr int NW = ATT_THREADS / 32, R = B / NW, C = D / 32;
    __shared__ float Qs[B][D + 1], dOs[B][D + 1], Ks[B][D + 1], Vs[B][D + 1];
    __shared__ float Ps[B][B + 1], dSs[B][B + 1], lse_s[B], dsum_s[B];
    const AttnSeq sq = attn_seq(starts, rows, k_lens);
    const int h = blockIdx.y, i0 = blockIdx.x * B;
    if (i0 >= sq.rows) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    attn_load<T, D, B>(Qs, q, sq.start + i0, sq.rows - i0, qkv_stride, h);
    attn_load<T, D, B>(dOs, dout, sq.start + i0, sq.rows - i0, o_stride, h);
    attn_load_rowstats<B>(lse_s, dsum_s, lse, dsum, sq.start + i0, sq.rows - i0, h, H);
    float g[R][C];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < C; c++) g[r][c] = 0.f;
    for (int j0 = 0; j0 < sq.keys; j0 += B) {
        __syncthreads();
        attn_load<T, D, B>(Ks, k, sq.start + j0, sq.keys - j0, qkv_stride, h);
        attn_load<T, D, B>(Vs, v, sq.start + j0, sq.keys - j0, qkv_stride, h);
        __syncthreads();
        attn_bwd_tile<D, B>(Qs, dOs, Ks, Vs, lse_s, dsum_s, Ps, dSs, i0, sq.rows, j0, sq.keys, h,
                            H, scale, p_drop, seed, drop_stride);
        __syncthreads();
        // Warp w owns query rows w*R ..: dQ[i] += sum_j dS[i, j] K[j].
        for (int j = 0; j < B; j++) {
            float kj[C];
#pragma unroll
            for (int c = 0; c < C; c++) kj[c] = Ks[j][lane + 32 * c];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float ds = dSs[warp * R + r][j];
#pragma unroll
                for (int c = 0; c < C; c++) g[r][c] += ds * kj[c];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int i = warp * R + r;
        if (i0 + i >= sq.rows) continue;
        const i64 e = (i64)(sq.start + i0 + i) * qkv_stride + h * D;
#pragma unroll
        for (int c = 0; c < C; c++) dq[e + lane + 32 * c] = from_f<T>(scale * g[r][c]);
    }
}

#define ATTN_ARGS                                                                                \
    const int *starts, const int *rows, const int *k_lens, int H, int qkv_stride, int o_stride,  \
        float scale, float p_drop, u64 seed, int drop_stride
#define ATTN_PASS starts, rows, k_lens, H, qkv_stride, o_stride, scale, p_drop, seed, drop_stride

// Tile: 32 rows for head dims 32 and 64, 16 for 128 (shared memory stays under 48 KB).
#define ATTN_KERNELS(T, S, D, B)                                                                 \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS)                                    \
        attn_fwd_##S##_d##D(const T* q, const T* k, const T* v, T* o, float* lse, ATTN_ARGS) {    \
        attn_fwd<T, D, B>(q, k, v, o, lse, starts, rows, k_lens, H, qkv_stride, o_stride, scale,  \
                          p_drop, seed, drop_stride);                                            \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_bwd_dkdv_##S##_d##D(          \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dsum,  \
        T* dk, T* dv, ATTN_ARGS) {                                                               \
        attn_bwd_dkdv<T, D, B>(q, k, v, dout, lse, dsum, dk, dv, ATTN_PASS);                     \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_bwd_dq_##S##_d##D(            \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dsum,  \
        T* dq, ATTN_ARGS) {                                                                      \
        attn_bwd_dq<T, D, B>(q, k, v, dout, lse, dsum, dq, ATTN_PASS);                           \
    }

ATTN_KERNELS(float, f32, 32, 32)
ATTN_KERNELS(float, f32, 64, 32)
ATTN_KERNELS(float, f32, 128, 16)
ATTN_KERNELS(bf16, bf16, 32, 32)
ATTN_KERNELS(bf16, bf16, 64, 32)
ATTN_KERNELS(bf16, bf16, 128, 16)

extern "C" __global__ void attn_bwd_pre_f32(const float* o, const float* dout, float* dsum,
                                            int tokens, int H, int D, int o_stride) {
    attn_bwd_pre<float>(o, dout, dsum, tokens, H, D, o_stride);
}
extern "C" __global__ void attn_bwd_pre_bf16(const bf16* o, const bf16* dout, float* dsum,
                                             int tokens, int H, int D, int o_stride) {
    attn_bwd_pre<bf16>(o, dout, dsum, tokens, H, D, o_stride);
}

// ---------------------------------------------------------------------------------------------
// Version 2: the forward on tensor cores (bf16 storage, f32 accumulation), FlashAttention-2's
// layout. One block of 4 warps per 64 query rows; each warp owns 16 rows for the whole pass.
// S = Q K^T and O += P V are `mma.sync.m16n8k16` (bf16 in, f32 out); Q, K and V come from
// shared memory through `ldmatrix` (V transposed on the way); P never leaves registers: the
// accumulator fragment of S is, element for element, the A fragment of P V once converted to
// bf16. Same arguments and results as attn_fwd_bf16_dD above (the tests compare the two).
//
// Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4):
//   A 16x16 row-major: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B 16x8:            b0 (k 2t..2t+1, n g), b1 (k 2t+8..2t+9, n g)
//   C 16x8 f32:        c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                               unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)bf16_bits(lo) | ((unsigned)bf16_bits(hi) << 16);
}

// The three products every tensor-core kernel below is made of (a warp, 16 rows):
//
// frag_a_rows: rows row0 .. row0 + 15 of a shared tile as A fragments, one per 16 columns.
template <int KC, int PITCH>
__device__ __forceinline__ void frag_a_rows(unsigned (&a)[KC][4], const bf16 (*s)[PITCH], int row0,
                                            int lane) {
#pragma unroll
    for (int kc = 0; kc < KC; kc++) ldsm_x4(a[kc], &s[row0 + (lane & 15)][kc * 16 + (lane >> 4) * 8]);
}

// mma_abt: acc (16 x 8 NT) += A B^T, B's columns being the tile's rows 0 .. 8 NT - 1 (k runs
// along a row, so ldmatrix reads B without a transpose): S = Q K^T, dP = dO V^T, S^T = K Q^T.
template <int KC, int NT, int PITCH>
__device__ __forceinline__ void mma_abt(float (&acc)[NT][4], const unsigned (&a)[KC][4],
                                        const bf16 (*s)[PITCH], int lane) {
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            unsigned b[4];  // b0 b1 of n-tile 2np, then of n-tile 2np + 1
            ldsm_x4(b, &s[np * 16 + (lane >> 4) * 8 + (lane & 7)][kc * 16 + ((lane >> 3) & 1) * 8]);
            mma_bf16_16816(acc[2 * np], a[kc], b[0], b[1]);
            mma_bf16_16816(acc[2 * np + 1], a[kc], b[2], b[3]);
        }
    }
}

// mma_pb: acc (16 x 8 DT) += P B, P (16 x 16 KT) being the accumulators of an earlier product,
// element for element the A fragments once packed to bf16 (k = P's columns), and B the tile's
// rows 0 .. 16 KT - 1 read transposed by ldmatrix.trans: O += P V, dQ += dS K, dV += P^T dO.
template <int KT, int DT, int PITCH>
__device__ __forceinline__ void mma_pb(float (&acc)[DT][4], const float (&p)[2 * KT][4],
                                       const bf16 (*s)[PITCH], int lane) {
#pragma unroll
    for (int kc = 0; kc < KT; kc++) {
        const unsigned pa[4] = {pack_bf16x2(p[2 * kc][0], p[2 * kc][1]),
                                pack_bf16x2(p[2 * kc][2], p[2 * kc][3]),
                                pack_bf16x2(p[2 * kc + 1][0], p[2 * kc + 1][1]),
                                pack_bf16x2(p[2 * kc + 1][2], p[2 * kc + 1][3])};
#pragma unroll
        for (int dp = 0; dp < DT / 2; dp++) {
            unsigned b[4];  // b0 b1 of n-tile 2dp, then of n-tile 2dp + 1
            ldsm_x4_trans(b, &s[kc * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][dp * 16 + (lane >> 4) * 8]);
            mma_bf16_16816(acc[2 * dp], pa, b[0], b[1]);
            mma_bf16_16816(acc[2 * dp + 1], pa, b[2], b[3]);
        }
    }
}

// Rows [first, first + valid) of one head, 16 bytes per thread per step, zeros past `valid`.
template <int D, int ROWS, int PITCH>
__device__ __forceinline__ void mma_load(bf16 (&s)[ROWS][PITCH], const bf16* base, int first,
                                         int valid, int stride, int h) {
    constexpr int CHUNKS = D / 8;
    for (int e = threadIdx.x; e < ROWS * CHUNKS; e += ATT_THREADS) {
        const int r = e / CHUNKS, c = (e % CHUNKS) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < valid) v = *reinterpret_cast<const uint4*>(base + (i64)(first + r) * stride + h * D + c);
        *reinterpret_cast<uint4*>(&s[r][c]) = v;
    }
}

template <int D, int BK>
__device__ __forceinline__ void attn_fwd_mma(const bf16* q, const bf16* k, const bf16* v, bf16* o,
                                             float* lse, const int* starts, const int* rows,
                                             const int* k_lens, int H, int qkv_stride,
                                             int o_stride, float scale, float p_drop, u64 seed,
                                             int drop_stride) {
    constexpr int BQ = 64, PITCH = D + 8;  // +16 bytes per row: ldmatrix rows hit distinct banks
    constexpr int KC = D / 16;             // k-chunks of the head dimension (S = Q K^T)
    constexpr int NT = BK / 8;             // n-tiles of keys in S
    constexpr int DT = D / 8;              // n-tiles of the head dimension in O
    __shared__ __align__(16) bf16 Qs[BQ][PITCH];
    __shared__ __align__(16) bf16 Ks[BK][PITCH];
    __shared__ __align__(16) bf16 Vs[BK][PITCH];
    const AttnSeq sq = attn_seq(starts, rows, k_lens);
    const int h = blockIdx.y, i0 = blockIdx.x * BQ;
    if (i0 >= sq.rows) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units: exp2 is one MUFU op
    const float keep_scale = p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f;

    mma_load<D, BQ, PITCH>(Qs, q, sq.start + i0, sq.rows - i0, qkv_stride, h);
    __syncthreads();
    // This warp's 16 query rows as A fragments, one per 16-wide chunk of the head dimension.
    unsigned qa[KC][4];
    frag_a_rows<KC, PITCH>(qa, Qs, warp * 16, lane);

    float acc[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // rows g and g + 8

    for (int j0 = 0; j0 < sq.keys; j0 += BK) {
        __syncthreads();
        mma_load<D, BK, PITCH>(Ks, k, sq.start + j0, sq.keys - j0, qkv_stride, h);
        mma_load<D, BK, PITCH>(Vs, v, sq.start + j0, sq.keys - j0, qkv_stride, h);
        __syncthreads();
        // S = Q K^T for 16 rows x BK keys: K's rows are B's columns, read without a transpose.
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        mma_abt<KC, NT, PITCH>(s, qa, Ks, lane);
        // Online softmax on the two rows this thread holds (the row's 4 threads: a quad).
        float mt[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = j0 + nt * 8 + 2 * t + (e & 1);
                s[nt][e] = key < sq.keys ? s[nt][e] * sl2 : NEG_INF;
                mt[e >> 1] = fmaxf(mt[e >> 1], s[nt][e]);
            }
        }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 1));
            mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 2));
            const float m_new = fmaxf(m[r], mt[r]);
            corr[r] = m[r] == NEG_INF ? 0.f : exp2f(m[r] - m_new);
            m[r] = m_new;
            l[r] *= corr[r];
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                float p = s[nt][e] == NEG_INF ? 0.f : exp2f(s[nt][e] - m[r]);
                l[r] += p;  // the normaliser sums the probabilities before dropout
                if (p_drop > 0.f) {
                    const int row = i0 + warp * 16 + g + 8 * r, key = j0 + nt * 8 + 2 * t + (e & 1);
                    p = dropout_keep(seed, attn_drop_index(h, H, row, key, drop_stride), p_drop)
                            ? p * keep_scale
                            : 0.f;
                }
                s[nt][e] = p;
            }
        }
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            acc[dt][0] *= corr[0], acc[dt][1] *= corr[0];
            acc[dt][2] *= corr[1], acc[dt][3] *= corr[1];
        }
        // O += P V: P's A fragments straight from S's accumulators; V through ldmatrix.trans.
        mma_pb<BK / 16, DT, PITCH>(acc, s, Vs, lane);
    }
    // Finish: the row sums over the quad, normalise, write O (bf16 pairs) and the LSE.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        const int row = i0 + warp * 16 + g + 8 * r;
        if (row >= sq.rows) continue;
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
        const i64 tok = sq.start + row;
        unsigned* out = reinterpret_cast<unsigned*>(o + tok * o_stride + h * D);
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
            out[(dt * 8 + 2 * t) / 2] = pack_bf16x2(acc[dt][2 * r] * inv, acc[dt][2 * r + 1] * inv);
        if (t == 0) lse[tok * H + h] = l[r] > 0.f ? (m[r] + log2f(l[r])) * 0.6931471805599453f : NEG_INF;
    }
}

#define ATTN_MMA(D, BK)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_fwd_mma_bf16_d##D(            \
        const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, ATTN_ARGS) {           \
        attn_fwd_mma<D, BK>(q, k, v, o, lse, ATTN_PASS);                                         \
    }

ATTN_MMA(32, 64)
ATTN_MMA(64, 64)
ATTN_MMA(128, 32)

// ---------------------------------------------------------------------------------------------
// The backward on tensor cores (bf16, head dims 32 and 64), in the same style as the forward and
// with the same fragment tricks: every product is an mma.sync whose A operand is either loaded
// by ldmatrix or is the accumulator of the previous product converted to bf16. Deterministic
// like the reference backward: one kernel owns a key tile (dK, dV), another a query tile (dQ).
//
//   dkdv: 4 warps x 16 keys; per query tile of 64: S^T = K Q^T and dP^T = V dO^T (16 keys x 64
//         queries per warp), P^T = exp(scale S^T - LSE), dS^T = P^T (dP^T - Dsum), then
//         dV += P^T dO and dK += dS^T Q with P^T / dS^T as A fragments (k = queries).
//   dq:   4 warps x 16 queries; per key tile of 64: S = Q K^T, dP = dO V^T, dS = P (dP - Dsum),
//         dQ += dS K with dS as the A fragment (k = keys).
// Dropout: the same mask element (query, key) as the forward, applied to P (for dV) and dP.

template <int D>
__device__ __forceinline__ void attn_bwd_dkdv_mma(const bf16* q, const bf16* k, const bf16* v,
                                                  const bf16* dout, const float* lse,
                                                  const float* dsum, bf16* dk, bf16* dv,
                                                  ATTN_ARGS) {
    constexpr int BK = 64, BQ = 64, PITCH = D + 8, KC = D / 16, QT = BQ / 8, DT = D / 8;
    __shared__ __align__(16) bf16 Ks[BK][PITCH];
    __shared__ __align__(16) bf16 Vs[BK][PITCH];
    __shared__ __align__(16) bf16 Qs[BQ][PITCH];
    __shared__ __align__(16) bf16 dOs[BQ][PITCH];
    __shared__ float lse_s[BQ], dsum_s[BQ];
    const AttnSeq sq = attn_seq(starts, rows, k_lens);
    const int h = blockIdx.y, j0 = blockIdx.x * BK;
    if (j0 >= sq.rows) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const float keep_scale = p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f;
    mma_load<D, BK, PITCH>(Ks, k, sq.start + j0, sq.keys - j0, qkv_stride, h);
    mma_load<D, BK, PITCH>(Vs, v, sq.start + j0, sq.keys - j0, qkv_stride, h);
    __syncthreads();
    unsigned ka[KC][4], va[KC][4];  // this warp's 16 keys of K and V as A fragments
    frag_a_rows<KC, PITCH>(ka, Ks, warp * 16, lane);
    frag_a_rows<KC, PITCH>(va, Vs, warp * 16, lane);
    float gk[DT][4], gv[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) gk[dt][e] = 0.f, gv[dt][e] = 0.f;

    for (int i0 = 0; j0 < sq.keys && i0 < sq.rows; i0 += BQ) {
        __syncthreads();
        mma_load<D, BQ, PITCH>(Qs, q, sq.start + i0, sq.rows - i0, qkv_stride, h);
        mma_load<D, BQ, PITCH>(dOs, dout, sq.start + i0, sq.rows - i0, o_stride, h);
        if (threadIdx.x < BQ) {
            const int r = threadIdx.x;
            const bool ok = i0 + r < sq.rows;
            lse_s[r] = ok ? lse[(i64)(sq.start + i0 + r) * H + h] : NEG_INF;
            dsum_s[r] = ok ? dsum[(i64)(sq.start + i0 + r) * H + h] : 0.f;
        }
        __syncthreads();
        float st[QT][4], dpt[QT][4];
#pragma unroll
        for (int nt = 0; nt < QT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] = 0.f, dpt[nt][e] = 0.f;
        mma_abt<KC, QT, PITCH>(st, ka, Qs, lane);   // S^T = K Q^T
        mma_abt<KC, QT, PITCH>(dpt, va, dOs, lane);  // dP^T = V dO^T
        // Element (key row g + 8 (e / 2) of this warp, query column nt * 8 + 2t + e % 2).
#pragma unroll
        for (int nt = 0; nt < QT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = j0 + warp * 16 + g + 8 * (e >> 1), qi = nt * 8 + 2 * t + (e & 1);
                float p = 0.f, dp = dpt[nt][e];
                if (key < sq.keys && lse_s[qi] != NEG_INF) p = expf(scale * st[nt][e] - lse_s[qi]);
                float pd = p;
                if (p_drop > 0.f) {
                    const bool keep = dropout_keep(
                        seed, attn_drop_index(h, H, i0 + qi, key, drop_stride), p_drop);
                    pd = keep ? p * keep_scale : 0.f;
                    dp = keep ? dp * keep_scale : 0.f;
                }
                st[nt][e] = pd;
                dpt[nt][e] = p * (dp - dsum_s[qi]);
            }
        }
        // dV += P^T dO and dK += dS^T Q: A from the registers (k = queries), B = dO / Q rows
        // read transposed by ldmatrix.trans (k = query, n = feature).
        mma_pb<BQ / 16, DT, PITCH>(gv, st, dOs, lane);
        mma_pb<BQ / 16, DT, PITCH>(gk, dpt, Qs, lane);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int key = j0 + warp * 16 + g + 8 * r;
        if (key >= sq.rows) continue;
        const i64 e = (i64)(sq.start + key) * qkv_stride + h * D;
        unsigned* ok = reinterpret_cast<unsigned*>(dk + e);
        unsigned* ov = reinterpret_cast<unsigned*>(dv + e);
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            ok[(dt * 8 + 2 * t) / 2] = pack_bf16x2(scale * gk[dt][2 * r], scale * gk[dt][2 * r + 1]);
            ov[(dt * 8 + 2 * t) / 2] = pack_bf16x2(gv[dt][2 * r], gv[dt][2 * r + 1]);
        }
    }
}

template <int D>
__device__ __forceinline__ void attn_bwd_dq_mma(const bf16* q, const bf16* k, const bf16* v,
                                                const bf16* dout, const float* lse,
                                                const float* dsum, bf16* dq, ATTN_ARGS) {
    constexpr int BQ = 64, BK = 64, PITCH = D + 8, KC = D / 16, NT = BK / 8, DT = D / 8;
    __shared__ __align__(16) bf16 Qs[BQ][PITCH];
    __shared__ __align__(16) bf16 dOs[BQ][PITCH];
    __shared__ __align__(16) bf16 Ks[BK][PITCH];
    __shared__ __align__(16) bf16 Vs[BK][PITCH];
    const AttnSeq sq = attn_seq(starts, rows, k_lens);
    const int h = blockIdx.y, i0 = blockIdx.x * BQ;
    if (i0 >= sq.rows) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const float keep_scale = p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f;
    mma_load<D, BQ, PITCH>(Qs, q, sq.start + i0, sq.rows - i0, qkv_stride, h);
    mma_load<D, BQ, PITCH>(dOs, dout, sq.start + i0, sq.rows - i0, o_stride, h);
    __syncthreads();
    unsigned qa[KC][4], oa[KC][4];
    frag_a_rows<KC, PITCH>(qa, Qs, warp * 16, lane);
    frag_a_rows<KC, PITCH>(oa, dOs, warp * 16, lane);
    float row_lse[2], row_dsum[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = i0 + warp * 16 + g + 8 * r;
        const bool ok = row < sq.rows;
        row_lse[r] = ok ? lse[(i64)(sq.start + row) * H + h] : NEG_INF;
        row_dsum[r] = ok ? dsum[(i64)(sq.start + row) * H + h] : 0.f;
    }
    float gq[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++) gq[dt][0] = gq[dt][1] = gq[dt][2] = gq[dt][3] = 0.f;

    for (int j0 = 0; j0 < sq.keys; j0 += BK) {
        __syncthreads();
        mma_load<D, BK, PITCH>(Ks, k, sq.start + j0, sq.keys - j0, qkv_stride, h);
        mma_load<D, BK, PITCH>(Vs, v, sq.start + j0, sq.keys - j0, qkv_stride, h);
        __syncthreads();
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] = 0.f, dp[nt][e] = 0.f;
        mma_abt<KC, NT, PITCH>(s, qa, Ks, lane);   // S = Q K^T
        mma_abt<KC, NT, PITCH>(dp, oa, Vs, lane);  // dP = dO V^T
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, row = i0 + warp * 16 + g + 8 * r;
                const int key = j0 + nt * 8 + 2 * t + (e & 1);
                float p = 0.f, d = dp[nt][e];
                if (key < sq.keys && row_lse[r] != NEG_INF) p = expf(scale * s[nt][e] - row_lse[r]);
                if (p_drop > 0.f)
                    d = dropout_keep(seed, attn_drop_index(h, H, row, key, drop_stride), p_drop)
                            ? d * keep_scale
                            : 0.f;
                s[nt][e] = p * (d - row_dsum[r]);
            }
        }
        // dQ += dS K: dS as A (k = keys), K rows read transposed (k = key, n = feature).
        mma_pb<BK / 16, DT, PITCH>(gq, s, Ks, lane);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = i0 + warp * 16 + g + 8 * r;
        if (row >= sq.rows) continue;
        unsigned* o = reinterpret_cast<unsigned*>(dq + (i64)(sq.start + row) * qkv_stride + h * D);
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
            o[(dt * 8 + 2 * t) / 2] = pack_bf16x2(scale * gq[dt][2 * r], scale * gq[dt][2 * r + 1]);
    }
}

#define ATTN_BWD_MMA(D)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_bwd_dkdv_mma_bf16_d##D(       \
        const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,         \
        const float* dsum, bf16* dk, bf16* dv, ATTN_ARGS) {                                      \
        attn_bwd_dkdv_mma<D>(q, k, v, dout, lse, dsum, dk, dv, ATTN_PASS);                       \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_bwd_dq_mma_bf16_d##D(         \
        const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,         \
        const float* dsum, bf16* dq, ATTN_ARGS) {                                                \
        attn_bwd_dq_mma<D>(q, k, v, dout, lse, dsum, dq, ATTN_PASS);                             \
    }

ATTN_BWD_MMA(32)
ATTN_BWD_MMA(64)
