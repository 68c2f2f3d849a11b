// Prepended to every kernel family before NVRTC compiles it (see src/source.rs), so each family
// is one self-contained translation unit and no CUDA headers are needed: bf16 is handled as its
// bit pattern, with the same round-to-nearest-even conversion as the CPU engine (`half::bf16`).

typedef unsigned long long u64;
typedef long long i64;
#define NEG_INF __int_as_float(0xff800000)

// bf16 as raw bits. A struct (not a bare u16) so that overloads on `const bf16*` stay distinct.
struct bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __uint_as_float(((unsigned)v.bits) << 16); }

// f32 -> bf16, round to nearest even; NaN stays NaN (quiet), as half::bf16::from_f32 does.
__device__ __forceinline__ unsigned short bf16_bits(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) {
    bf16 r;
    r.bits = bf16_bits(v);
    return r;
}

// 16-byte packs: 4 floats or 8 bf16 per load/store. Callers guarantee 16-byte alignment
// (the Rust launchers check it).
template <typename T> struct Pack;
template <> struct Pack<float> { static constexpr int N = 4; };
template <> struct Pack<bf16> { static constexpr int N = 8; };

__device__ __forceinline__ void unpack(uint4 r, float (&f)[4]) {
    f[0] = __uint_as_float(r.x);
    f[1] = __uint_as_float(r.y);
    f[2] = __uint_as_float(r.z);
    f[3] = __uint_as_float(r.w);
}
__device__ __forceinline__ void unpack(uint4 r, float (&f)[8]) {
    unsigned w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        f[2 * j] = __uint_as_float(w[j] << 16);
        f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
}
__device__ __forceinline__ uint4 pack(const float (&f)[4]) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
                      __float_as_uint(f[3]));
}
__device__ __forceinline__ uint4 pack(const float (&f)[8]) {
    unsigned w[4];
#pragma unroll
    for (int j = 0; j < 4; j++)
        w[j] = (unsigned)bf16_bits(f[2 * j]) | ((unsigned)bf16_bits(f[2 * j + 1]) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}
template <typename T>
__device__ __forceinline__ void load_pack(const T* p, i64 k, float (&f)[Pack<T>::N]) {
    unpack(reinterpret_cast<const uint4*>(p)[k], f);
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, i64 k, const float (&f)[Pack<T>::N]) {
    reinterpret_cast<uint4*>(p)[k] = pack(f);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// Safe to call repeatedly: the leading barrier protects the scratch from the previous call.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return warp_sum(lane < nw ? part[lane] : 0.f);
}
__device__ __forceinline__ float block_max(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return warp_max(lane < nw ? part[lane] : NEG_INF);
}

// The dropout mask, bit for bit the CPU engine's (engine/src/dropout.rs): element i of a call
// with seed s is kept when the top 24 bits of SplitMix64(s, i) are >= p * 2^24.
__device__ __forceinline__ u64 mix_hash(u64 seed, u64 i) {
    u64 z = seed ^ (i * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ bool dropout_keep(u64 seed, u64 i, float p) {
    return (float)(mix_hash(seed, i) >> 40) >= p * 16777216.f;
}

// Grid-stride loop over n items.
#define GRID_STRIDE(i, n) \
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
