// Multi-tensor AdamW: every parameter tensor of the model updated in one launch. The host builds
// a table once (the parameter set is fixed): per tensor its pointers and length, per block the
// tensor it works on and where its chunk starts.
//
//   adamw_multi(params[k] f32*, grads[k] f32*, m[k] f32*, v[k] f32*, copies[k] bf16* (0: none),
//               lens[k], decay[k], block_tensor[blocks], block_start[blocks], chunk,
//               lr, beta1, beta2, eps, bc1, bc2, grad_scale (device scalar or null))
//   For each element, with g = grad * (*grad_scale) (gradient clipping without a host sync):
//       p -= lr * decay * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//       p -= lr * (m / bc1) / (sqrt(v / bc2) + eps);   copy = bf16(p)
//   exactly the CPU engine's order of operations (engine/src/optim.rs).
//   sum_squares_multi(grads[k], lens[k], block_tensor, block_start, chunk, part[blocks])
//       part[b] = sum of g^2 over block b's chunk (then reduce.cu's clip_scale_f32).

extern "C" __global__ void adamw_multi(const u64* params, const u64* grads, const u64* ms,
                                       const u64* vs, const u64* copies, const i64* lens,
                                       const float* decay, const int* block_tensor,
                                       const i64* block_start, int chunk, float lr, float beta1,
                                       float beta2, float eps, float bc1, float bc2,
                                       const float* grad_scale) {
    const int t = block_tensor[blockIdx.x];
    const i64 lo = block_start[blockIdx.x], hi = min(lens[t], lo + chunk);
    float* p = reinterpret_cast<float*>(params[t]);
    const float* g = reinterpret_cast<const float*>(grads[t]);
    float* m = reinterpret_cast<float*>(ms[t]);
    float* v = reinterpret_cast<float*>(vs[t]);
    bf16* copy = reinterpret_cast<bf16*>(copies[t]);
    const float wd = decay[t];
    const float gs = grad_scale ? *grad_scale : 1.f;
    for (i64 i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const float gi = g[i] * gs;
        float pi = p[i];
        pi -= lr * wd * pi;
        const float mi = beta1 * m[i] + (1.f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
        pi -= lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (copy) copy[i] = from_f<bf16>(pi);
    }
}

extern "C" __global__ void sum_squares_multi(const u64* grads, const i64* lens,
                                             const int* block_tensor, const i64* block_start,
                                             int chunk, float* part) {
    const int t = block_tensor[blockIdx.x];
    const i64 lo = block_start[blockIdx.x], hi = min(lens[t], lo + chunk);
    const float* g = reinterpret_cast<const float*>(grads[t]);
    float acc = 0.f;
    for (i64 i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += g[i] * g[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}
