// GELU, forward and backward, in its two forms (erf: BERT's "gelu"; tanh: "gelu_new"), and fused
// with the bias add that precedes it in BERT's feed-forward layer. f32 and bf16 (math in f32).
//
//   gelu_{erf,tanh}_fwd_T(x[n], y[n])                         y = gelu(x)
//   gelu_{erf,tanh}_bwd_T(x[n], dy[n], dx[n])                 dx = dy * gelu'(x)
//   bias_gelu_{erf,tanh}_fwd_T(x[rows, cols], bias[cols], y)  y = gelu(x + bias)
//   bias_gelu_{erf,tanh}_bwd_T(x[rows, cols], bias[cols], dy, dx)  dx = dy * gelu'(x + bias)
// The fused backward recomputes x + bias instead of storing it: one tensor less in memory.
// dbias is the column sum of dx (reduce.cu).

struct GeluErf {
    static __device__ __forceinline__ float f(float x) {
        return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    }
    static __device__ __forceinline__ float df(float x) {
        const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
};

struct GeluTanh {
    static __device__ __forceinline__ float f(float x) {
        const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.f + tanhf(u));
    }
    static __device__ __forceinline__ float df(float x) {
        const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        const float t = tanhf(u);
        const float du = 0.79788456080286536f * (1.f + 3.f * 0.044715f * x * x);
        return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du;
    }
};

// x (+ bias broadcast over rows of `cols`, when bias != nullptr) -> y = G(x + b), or the
// backward dx = dy * G'(x + b) when dy != nullptr.
template <typename G, typename T>
__device__ __forceinline__ void gelu_body(const T* x, const T* bias, const T* dy, T* out, i64 n,
                                          int cols) {
    constexpr int N = Pack<T>::N;
    const i64 packs = n / N;  // launcher: with a bias, cols % N == 0
    const int cpacks = cols / N;
    GRID_STRIDE(k, packs) {
        float v[N], b[N], g[N];
        load_pack(x, k, v);
        if (bias) {
            load_pack(bias, k % cpacks, b);
#pragma unroll
            for (int j = 0; j < N; j++) v[j] += b[j];
        }
        if (dy) {
            load_pack(dy, k, g);
#pragma unroll
            for (int j = 0; j < N; j++) v[j] = g[j] * G::df(v[j]);
        } else {
#pragma unroll
            for (int j = 0; j < N; j++) v[j] = G::f(v[j]);
        }
        store_pack(out, k, v);
    }
    GRID_STRIDE(i, n - packs * N) {  // only without a bias (n % N tail)
        const i64 e = packs * N + i;
        const float v = to_f(x[e]);
        out[e] = from_f<T>(dy ? to_f(dy[e]) * G::df(v) : G::f(v));
    }
}

#define GELU_KERNELS(G, NAME, T, S)                                                              \
    extern "C" __global__ void NAME##_fwd_##S(const T* x, T* y, i64 n) {                       \
        gelu_body<G, T>(x, nullptr, nullptr, y, n, 0);                                           \
    }                                                                                            \
    extern "C" __global__ void NAME##_bwd_##S(const T* x, const T* dy, T* dx, i64 n) {         \
        gelu_body<G, T>(x, nullptr, dy, dx, n, 0);                                               \
    }                                                                                            \
    extern "C" __global__ void bias_##NAME##_fwd_##S(const T* x, const T* bias, T* y, i64 n,   \
                                                     int cols) {                                 \
        gelu_body<G, T>(x, bias, nullptr, y, n, cols);                                           \
    }                                                                                            \
    extern "C" __global__ void bias_##NAME##_bwd_##S(const T* x, const T* bias, const T* dy,   \
                                                     T* dx, i64 n, int cols) {                   \
        gelu_body<G, T>(x, bias, dy, dx, n, cols);                                               \
    }

GELU_KERNELS(GeluErf, gelu_erf, float, f32)
GELU_KERNELS(GeluErf, gelu_erf, bf16, bf16)
GELU_KERNELS(GeluTanh, gelu_tanh, float, f32)
GELU_KERNELS(GeluTanh, gelu_tanh, bf16, bf16)
