// Row softmax (attention probabilities), forward and backward. One warp per row; rows of any
// length (BERT: the key length, 128-512). Math in f32, storage f32 or bf16.
//
//   softmax_fwd_T(x[rows, cols], mask, y[rows, cols], rows, cols, scale, rows_per_mask)
//       y[r] = softmax(scale * x[r] + mask[r / rows_per_mask])
//     mask: f32 [rows / rows_per_mask, cols] additive (0 or -inf/-1e4 for padded keys), or null.
//     For attention scores laid out (batch, heads, queries, keys), rows_per_mask = heads*queries.
//   softmax_bwd_T(y[rows, cols], dy[rows, cols], dx[rows, cols], rows, cols)
//       dx = y * (dy - sum(dy * y)) per row

template <typename T>
__device__ __forceinline__ void softmax_fwd(const T* x, const float* mask, T* y, int rows, int cols,
                                            float scale, int rows_per_mask) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const T* xr = x + (i64)r * cols;
    const float* mr = mask ? mask + (i64)(r / rows_per_mask) * cols : nullptr;
    T* yr = y + (i64)r * cols;
    // Online max and sum in one read of the row.
    float m = NEG_INF, s = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float v = scale * to_f(xr[c]) + (mr ? mr[c] : 0.f);
        if (v > m) {
            s = s * expf(m - v) + 1.f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    const float gm = warp_max(m);
    s = warp_sum(m == NEG_INF ? 0.f : s * expf(m - gm));
    // A row masked everywhere (gm = -inf) gives zeros rather than NaN.
    const float inv = (gm == NEG_INF || s == 0.f) ? 0.f : 1.f / s;
    for (int c = lane; c < cols; c += 32) {
        const float v = scale * to_f(xr[c]) + (mr ? mr[c] : 0.f);
        yr[c] = from_f<T>(gm == NEG_INF ? 0.f : expf(v - gm) * inv);
    }
}

template <typename T>
__device__ __forceinline__ void softmax_bwd(const T* y, const T* dy, T* dx, int rows, int cols) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const i64 o = (i64)r * cols;
    float d = 0.f;
    for (int c = lane; c < cols; c += 32) d += to_f(y[o + c]) * to_f(dy[o + c]);
    d = warp_sum(d);
    for (int c = lane; c < cols; c += 32) dx[o + c] = from_f<T>(to_f(y[o + c]) * (to_f(dy[o + c]) - d));
}

#define SOFTMAX(T, S)                                                                            \
    extern "C" __global__ void softmax_fwd_##S(const T* x, const float* mask, T* y, int rows,   \
                                               int cols, float scale, int rows_per_mask) {       \
        softmax_fwd<T>(x, mask, y, rows, cols, scale, rows_per_mask);                            \
    }                                                                                            \
    extern "C" __global__ void softmax_bwd_##S(const T* y, const T* dy, T* dx, int rows,        \
                                               int cols) {                                       \
        softmax_bwd<T>(y, dy, dx, rows, cols);                                                   \
    }

SOFTMAX(float, f32)
SOFTMAX(bf16, bf16)
