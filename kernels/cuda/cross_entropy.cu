// Softmax cross-entropy over a large vocabulary (BERT's MLM head: only the masked positions'
// rows are given), forward, backward, and both in one pass. One block per row; the forward
// reads each logit once (online max and sum), in f32 from f32 or bf16 logits.
//
//   cross_entropy_fwd_T(logits[rows, classes], targets[rows] i32, loss[rows], lse[rows],
//                       rows, classes, ignore)
//       lse = logsumexp(logits[r]); loss = lse - logits[r, t]; loss = 0 where t == ignore.
//       A target outside [0, classes) that is not `ignore` gives loss = NaN, so it cannot pass
//       silently (the launchers' callers validate targets on the host first).
//   cross_entropy_bwd_T(logits, lse, targets, dlogits[rows, classes], rows, classes, ignore, scale)
//       dlogits = scale * (softmax(logits) - onehot(t)); zero rows where t == ignore.
//   cross_entropy_fused_T(logits, targets, loss, lse, dlogits, rows, classes, ignore, scale)
//       both; dlogits may be the logits buffer itself (each element is read, then written, by
//       the same thread), which is how the MLM head avoids a second [rows, vocab] buffer.

template <typename T>
__device__ __forceinline__ float row_lse(const T* x, int classes) {
    float m = NEG_INF, s = 0.f;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) {
        const float v = to_f(x[c]);
        if (v > m) {
            s = s * expf(m - v) + 1.f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    const float gm = block_max(m);
    const float gs = block_sum(m == NEG_INF ? 0.f : s * expf(m - gm));
    return gm + logf(gs);
}

template <typename T>
__device__ __forceinline__ void ce_fwd(const T* logits, const int* targets, float* loss,
                                       float* lse, int classes, int ignore) {
    const int r = blockIdx.x;
    const T* x = logits + (i64)r * classes;
    const float l = row_lse(x, classes);
    if (threadIdx.x == 0) {
        const int t = targets[r];
        lse[r] = l;
        if (t == ignore) loss[r] = 0.f;
        else if (t < 0 || t >= classes) loss[r] = __int_as_float(0x7fc00000);
        else loss[r] = l - to_f(x[t]);
    }
}

template <typename T>
__device__ __forceinline__ void ce_bwd(const T* x, float l, int t, T* dx, int classes, int ignore,
                                       float scale) {
    const bool skip = (t == ignore);
    for (int c = threadIdx.x; c < classes; c += blockDim.x) {
        float d = 0.f;
        if (!skip) d = scale * (expf(to_f(x[c]) - l) - (c == t ? 1.f : 0.f));
        dx[c] = from_f<T>(d);
    }
}

#define CROSS_ENTROPY(T, S)                                                                      \
    extern "C" __global__ void cross_entropy_fwd_##S(const T* logits, const int* targets,       \
                                                     float* loss, float* lse, int rows,          \
                                                     int classes, int ignore) {                  \
        ce_fwd<T>(logits, targets, loss, lse, classes, ignore);                                  \
    }                                                                                            \
    extern "C" __global__ void cross_entropy_bwd_##S(const T* logits, const float* lse,         \
                                                     const int* targets, T* dlogits, int rows,   \
                                                     int classes, int ignore, float scale) {     \
        const i64 o = (i64)blockIdx.x * classes;                                                 \
        ce_bwd<T>(logits + o, lse[blockIdx.x], targets[blockIdx.x], dlogits + o, classes,        \
                  ignore, scale);                                                                \
    }                                                                                            \
    extern "C" __global__ void cross_entropy_fused_##S(const T* logits, const int* targets,     \
                                                       float* loss, float* lse, T* dlogits,      \
                                                       int rows, int classes, int ignore,        \
                                                       float scale) {                            \
        const i64 o = (i64)blockIdx.x * classes;                                                 \
        const float l = row_lse(logits + o, classes);                                            \
        const int t = targets[blockIdx.x];                                                       \
        if (threadIdx.x == 0) {                                                                  \
            lse[blockIdx.x] = l;                                                                 \
            loss[blockIdx.x] = t == ignore ? 0.f                                                 \
                               : (t < 0 || t >= classes) ? __int_as_float(0x7fc00000)            \
                                                         : l - to_f(logits[o + t]);              \
        }                                                                                        \
        __syncthreads(); /* logits[o + t] is read before any thread overwrites it */            \
        ce_bwd<T>(logits + o, l, t, dlogits + o, classes, ignore, scale);                        \
    }

CROSS_ENTROPY(float, f32)
CROSS_ENTROPY(bf16, bf16)
