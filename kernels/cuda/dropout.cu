// Dropout with the CPU engine's counter-based mask (common.cuh: dropout_keep), so a seed gives
// the same mask on both devices and the backward regenerates it instead of storing it.
//
//   dropout_T(x[n], y[n], n, p, seed)   y[i] = keep(seed, i) ? x[i] / (1 - p) : 0
// The same kernel on dy with the same seed is the backward. y may be x (in place).

template <typename T>
__device__ __forceinline__ void dropout_body(const T* x, T* y, i64 n, float p, u64 seed) {
    constexpr int N = Pack<T>::N;
    const float scale = 1.f / (1.f - p);
    const i64 packs = n / N;
    GRID_STRIDE(k, packs) {
        float v[N];
        load_pack(x, k, v);
#pragma unroll
        for (int j = 0; j < N; j++) v[j] = dropout_keep(seed, (u64)(k * N + j), p) ? v[j] * scale : 0.f;
        store_pack(y, k, v);
    }
    GRID_STRIDE(i, n - packs * N) {
        const i64 e = packs * N + i;
        y[e] = from_f<T>(dropout_keep(seed, (u64)e, p) ? to_f(x[e]) * scale : 0.f);
    }
}

extern "C" __global__ void dropout_f32(const float* x, float* y, i64 n, float p, u64 seed) {
    dropout_body<float>(x, y, n, p, seed);
}
extern "C" __global__ void dropout_bf16(const bf16* x, bf16* y, i64 n, float p, u64 seed) {
    dropout_body<bf16>(x, y, n, p, seed);
}
