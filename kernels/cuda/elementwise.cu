// Elementwise kernels over flat buffers of n elements, in f32 and bf16 (computed in f32).
// Every pointer is 16-byte aligned (checked by the launcher): the body moves 16-byte packs,
// a scalar tail takes the last n % pack elements.
//
//   add_T(a[n], b[n], y[n])              y = a + b            (residual connections)
//   axpby_T(a[n], b[n], y[n], alpha, beta) y = alpha a + beta b (gradient accumulation, scaling)
//   mul_T(a[n], b[n], y[n])              y = a * b
//   bias_add_T(x[rows, cols], bias[cols], y[rows, cols])      y = x + bias (broadcast over rows)
//   cast_f32_bf16(x[n] f32, y[n] bf16), cast_bf16_f32(x[n] bf16, y[n] f32)
//   fill_f32(y[n], v)
//   tanh_f32(x[n], y[n])                 y = tanh(x)          (BERT's pooler)
//   tanh_bwd_f32(y[n], dy[n], dx[n])     dx = dy (1 - y^2), from the forward's output

template <typename T, typename F>
__device__ __forceinline__ void map2(const T* a, const T* b, T* y, i64 n, F f) {
    constexpr int N = Pack<T>::N;
    const i64 packs = n / N;
    GRID_STRIDE(k, packs) {
        float u[N], v[N];
        load_pack(a, k, u);
        load_pack(b, k, v);
#pragma unroll
        for (int j = 0; j < N; j++) u[j] = f(u[j], v[j]);
        store_pack(y, k, u);
    }
    GRID_STRIDE(i, n - packs * N) {
        const i64 e = packs * N + i;
        y[e] = from_f<T>(f(to_f(a[e]), to_f(b[e])));
    }
}

struct AddOp {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
    __device__ float operator()(float a, float b) const { return a * b; }
};
struct AxpbyOp {
    float alpha, beta;
    __device__ float operator()(float a, float b) const { return alpha * a + beta * b; }
};

#define ELEMENTWISE(T, S)                                                                        \
    extern "C" __global__ void add_##S(const T* a, const T* b, T* y, i64 n) {                   \
        map2(a, b, y, n, AddOp{});                                                               \
    }                                                                                            \
    extern "C" __global__ void mul_##S(const T* a, const T* b, T* y, i64 n) {                   \
        map2(a, b, y, n, MulOp{});                                                               \
    }                                                                                            \
    extern "C" __global__ void axpby_##S(const T* a, const T* b, T* y, i64 n, float alpha,      \
                                         float beta) {                                           \
        map2(a, b, y, n, AxpbyOp{alpha, beta});                                                  \
    }                                                                                            \
    extern "C" __global__ void bias_add_##S(const T* x, const T* bias, T* y, i64 rows, int cols) { \
        constexpr int N = Pack<T>::N;                                                            \
        const int cpacks = cols / N; /* launcher: cols % N == 0 */                               \
        GRID_STRIDE(k, rows * cpacks) {                                                          \
            float u[N], v[N];                                                                    \
            load_pack(x, k, u);                                                                  \
            load_pack(bias, k % cpacks, v);                                                      \
            _Pragma("unroll") for (int j = 0; j < N; j++) u[j] += v[j];                         \
            store_pack(y, k, u);                                                                 \
        }                                                                                        \
    }

ELEMENTWISE(float, f32)
ELEMENTWISE(bf16, bf16)

extern "C" __global__ void cast_f32_bf16(const float* x, bf16* y, i64 n) {
    const i64 packs = n / 8;
    GRID_STRIDE(k, packs) {
        float u[8], lo[4], hi[4];
        load_pack(x, 2 * k, lo);
        load_pack(x, 2 * k + 1, hi);
#pragma unroll
        for (int j = 0; j < 4; j++) u[j] = lo[j], u[4 + j] = hi[j];
        store_pack(y, k, u);
    }
    GRID_STRIDE(i, n - packs * 8) y[packs * 8 + i] = from_f<bf16>(x[packs * 8 + i]);
}

extern "C" __global__ void cast_bf16_f32(const bf16* x, float* y, i64 n) {
    const i64 packs = n / 8;
    GRID_STRIDE(k, packs) {
        float u[8], lo[4], hi[4];
        load_pack(x, k, u);
#pragma unroll
        for (int j = 0; j < 4; j++) lo[j] = u[j], hi[j] = u[4 + j];
        store_pack(y, 2 * k, lo);
        store_pack(y, 2 * k + 1, hi);
    }
    GRID_STRIDE(i, n - packs * 8) y[packs * 8 + i] = to_f(x[packs * 8 + i]);
}

extern "C" __global__ void fill_f32(float* y, i64 n, float v) {
    GRID_STRIDE(i, n) y[i] = v;
}

extern "C" __global__ void tanh_f32(const float* x, float* y, i64 n) {
    GRID_STRIDE(i, n) y[i] = tanhf(x[i]);
}

extern "C" __global__ void tanh_bwd_f32(const float* y, const float* dy, float* dx, i64 n) {
    GRID_STRIDE(i, n) dx[i] = dy[i] * (1.f - y[i] * y[i]);
}
