// LayerNorm over the last axis, forward and backward, fused with what precedes it in BERT:
// y = LayerNorm(dropout(x) + residual). One warp per row; math in f32; gamma, beta, mean and
// rstd in f32, activations f32 or bf16.
//
//   layernorm_fwd_T(x[rows, cols], residual[rows, cols] or null, gamma[cols], beta[cols],
//                   h[rows, cols] or null, y[rows, cols], mean[rows], rstd[rows],
//                   rows, cols, eps, p, seed)
//       h = dropout(x; p, seed) + residual   (dropout skipped when p == 0; residual optional)
//       y = (h - mean) * rstd * gamma + beta; h is written when the pointer is given (the
//       backward needs it), mean and rstd always.
//   layernorm_bwd_T(h, dy, gamma, mean, rstd, dx, rows, cols)
//       dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, xhat = (h - mean) * rstd
//   layernorm_params_bwd_T(h, dy, mean, rstd, part_dgamma[chunks, cols], part_dbeta[chunks, cols],
//                          rows, cols, rows_per_chunk)
//       per-chunk column sums of dy * xhat and dy; reduce.cu's column_sum_final adds the chunks
//       (two deterministic stages, no atomics).

template <typename T>
__device__ __forceinline__ float ln_input(const T* x, const T* res, i64 e, float p, u64 seed,
                                          float keep_scale) {
    float v = to_f(x[e]);
    if (p > 0.f) v = dropout_keep(seed, (u64)e, p) ? v * keep_scale : 0.f;
    if (res) v += to_f(res[e]);
    return v;
}

template <typename T>
__device__ __forceinline__ void layernorm_fwd(const T* x, const T* res, const float* gamma,
                                              const float* beta, T* h, T* y, float* mean,
                                              float* rstd, int rows, int cols, float eps, float p,
                                              u64 seed) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const i64 o = (i64)r * cols;
    const float ks = p > 0.f ? 1.f / (1.f - p) : 1.f;
    float s = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float v = ln_input(x, res, o + c, p, seed, ks);
        if (h) h[o + c] = from_f<T>(v);
        s += v;
    }
    const float mu = warp_sum(s) / cols;
    float q = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float d = ln_input(x, res, o + c, p, seed, ks) - mu;
        q += d * d;
    }
    const float rs = rsqrtf(warp_sum(q) / cols + eps);
    for (int c = lane; c < cols; c += 32) {
        const float v = ln_input(x, res, o + c, p, seed, ks);
        y[o + c] = from_f<T>((v - mu) * rs * gamma[c] + beta[c]);
    }
    if (lane == 0) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}

template <typename T>
__device__ __forceinline__ void layernorm_bwd(const T* h, const T* dy, const float* gamma,
                                              const float* mean, const float* rstd, T* dx,
                                              int rows, int cols) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const i64 o = (i64)r * cols;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.f, sgx = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float g = to_f(dy[o + c]) * gamma[c];
        sg += g;
        sgx += g * (to_f(h[o + c]) - mu) * rs;
    }
    const float mg = warp_sum(sg) / cols, mgx = warp_sum(sgx) / cols;
    for (int c = lane; c < cols; c += 32) {
        const float g = to_f(dy[o + c]) * gamma[c];
        const float xh = (to_f(h[o + c]) - mu) * rs;
        dx[o + c] = from_f<T>(rs * (g - mg - xh * mgx));
    }
}

// grid (ceil(cols / blockDim.x), chunks): one thread per column, a chunk of rows per block row.
template <typename T>
__device__ __forceinline__ void layernorm_params_bwd(const T* h, const T* dy, const float* mean,
                                                     const float* rstd, float* part_dgamma,
                                                     float* part_dbeta, int rows, int cols,
                                                     int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(rows, r0 + rows_per_chunk);
    float dg = 0.f, db = 0.f;
    for (int r = r0; r < r1; r++) {
        const i64 e = (i64)r * cols + c;
        const float d = to_f(dy[e]);
        dg += d * (to_f(h[e]) - mean[r]) * rstd[r];
        db += d;
    }
    part_dgamma[(i64)blockIdx.y * cols + c] = dg;
    part_dbeta[(i64)blockIdx.y * cols + c] = db;
}

#define LAYERNORM(T, S)                                                                          \
    extern "C" __global__ void layernorm_fwd_##S(                                               \
        const T* x, const T* res, const float* gamma, const float* beta, T* h, T* y,             \
        float* mean, float* rstd, int rows, int cols, float eps, float p, u64 seed) {            \
        layernorm_fwd<T>(x, res, gamma, beta, h, y, mean, rstd, rows, cols, eps, p, seed);       \
    }                                                                                            \
    extern "C" __global__ void layernorm_bwd_##S(const T* h, const T* dy, const float* gamma,    \
                                                 const float* mean, const float* rstd, T* dx,    \
                                                 int rows, int cols) {                           \
        layernorm_bwd<T>(h, dy, gamma, mean, rstd, dx, rows, cols);                              \
    }                                                                                            \
    extern "C" __global__ void layernorm_params_bwd_##S(                                        \
        const T* h, const T* dy, const float* mean, const float* rstd, float* part_dgamma,       \
        float* part_dbeta, int rows, int cols, int rows_per_chunk) {                             \
        layernorm_params_bwd<T>(h, dy, mean, rstd, part_dgamma, part_dbeta, rows, cols,          \
                                rows_per_chunk);                                                 \
    }

LAYERNORM(float, f32)
LAYERNORM(bf16, bf16)
