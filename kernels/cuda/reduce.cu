// Reductions, all deterministic (fixed order, no atomics): a first stage writes one partial per
// block, a second stage (one block) adds the partials in order.
//
//   column_sum_partial_T(x[rows, cols], part[chunks, cols], rows, cols, rows_per_chunk)
//       part[k, c] = sum of x[r, c] over the k-th chunk of rows   (grid: (ceil(cols/256), chunks))
//   column_sum_final_f32(part[chunks, cols], out[cols], chunks, cols, beta)
//       out = beta * out + sum over chunks (beta 0 overwrites; 1 accumulates a gradient)
//       Bias gradients (dbias = column sums of dy) and LayerNorm's dgamma/dbeta use these.
//   sum_partial_T(x[n], part[blocks], n, square)    part[b] = sum of x (or x^2) over block b's slice
//   sum_final_f32(part[k], out[1], k, scale)         out = scale * sum(part)   (one block)
//   clip_scale_f32(part[k], k, max_norm, out[2])     out = {norm, scale}: norm = sqrt(sum(part)),
//       scale = max_norm / (norm + 1e-6) when norm > max_norm and finite, else 1 (as the CPU
//       engine's clip_grad_norm); adamw.cu reads the scale from device memory: no host sync.
//   argmax_rows_T(x[rows, cols], out[rows] i32)      out[r] = the first column holding row r's
//       largest value; NaNs never win, a row with nothing above -inf gives 0   (grid: rows)
//       The masked-LM and NSP predictions of an evaluation, so only indices leave the GPU.

template <typename T>
__device__ __forceinline__ void column_sum_partial(const T* x, float* part, int rows, int cols,
                                                   int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
    float acc = 0.f;
    for (int r = r0; r < r1; r++) acc += to_f(x[(i64)r * cols + c]);
    part[(i64)blockIdx.y * cols + c] = acc;
}

extern "C" __global__ void column_sum_partial_f32(const float* x, float* part, int rows, int cols,
                                                  int rows_per_chunk) {
    column_sum_partial<float>(x, part, rows, cols, rows_per_chunk);
}
extern "C" __global__ void column_sum_partial_bf16(const bf16* x, float* part, int rows, int cols,
                                                   int rows_per_chunk) {
    column_sum_partial<bf16>(x, part, rows, cols, rows_per_chunk);
}

extern "C" __global__ void column_sum_final_f32(const float* part, float* out, int chunks, int cols,
                                                float beta) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.f;
    for (int k = 0; k < chunks; k++) acc += part[(i64)k * cols + c];
    out[c] = beta == 0.f ? acc : beta * out[c] + acc;
}

// Each block reduces a contiguous slice of ceil(n / gridDim.x) elements.
template <typename T>
__device__ __forceinline__ void sum_partial(const T* x, float* part, i64 n, int square) {
    const i64 per = (n + gridDim.x - 1) / gridDim.x;
    const i64 lo = blockIdx.x * per, hi = min(n, lo + per);
    float acc = 0.f;
    for (i64 i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const float v = to_f(x[i]);
        acc += square ? v * v : v;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

extern "C" __global__ void sum_partial_f32(const float* x, float* part, i64 n, int square) {
    sum_partial<float>(x, part, n, square);
}
extern "C" __global__ void sum_partial_bf16(const bf16* x, float* part, i64 n, int square) {
    sum_partial<bf16>(x, part, n, square);
}

// One block.
__device__ __forceinline__ float sum_in_order(const float* part, int k) {
    float acc = 0.f;
    for (int i = threadIdx.x; i < k; i += blockDim.x) acc += part[i];
    return block_sum(acc);
}

extern "C" __global__ void sum_final_f32(const float* part, float* out, int k, float scale) {
    const float s = sum_in_order(part, k);
    if (threadIdx.x == 0) out[0] = scale * s;
}

extern "C" __global__ void clip_scale_f32(const float* part, int k, float max_norm, float* out) {
    const float norm = sqrtf(sum_in_order(part, k));
    if (threadIdx.x == 0) {
        out[0] = norm;
        out[1] = (norm > max_norm && isfinite(norm)) ? max_norm / (norm + 1e-6f) : 1.f;
    }
}

// (value, column) pairs: the larger value wins, equal values go to the smaller column.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}

template <typename T>
__device__ __forceinline__ void argmax_rows(const T* x, int* out, int cols) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const T* row = x + (i64)blockIdx.x * cols;
    float v = NEG_INF;
    int i = 0x7fffffff;
    // Each thread visits its columns in increasing order: `>` keeps the first of equal values.
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float f = to_f(row[c]);
        if (f > v) v = f, i = c;
    }
    for (int o = 16; o > 0; o >>= 1)
        argmax_merge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = v, si[warp] = i;
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) >> 5;
        v = lane < warps ? sv[lane] : NEG_INF;
        i = lane < warps ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1)
            argmax_merge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
        if (lane == 0) out[blockIdx.x] = i == 0x7fffffff ? 0 : i;
    }
}

extern "C" __global__ void argmax_rows_f32(const float* x, int* out, int cols) {
    argmax_rows<float>(x, out, cols);
}
extern "C" __global__ void argmax_rows_bf16(const bf16* x, int* out, int cols) {
    argmax_rows<bf16>(x, out, cols);
}
