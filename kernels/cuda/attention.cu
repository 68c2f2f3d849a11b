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
