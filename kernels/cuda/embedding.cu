// Embedding lookups, forward and backward. Tables are f32 (master weights) or bf16 (the copies
// mixed precision trains with); ids are i32.
//
//   bert_embed_fwd_T(word_ids[tokens], type_ids[tokens] or null, pos_ids[tokens] or null,
//                    word[vocab, dim], pos[max_pos, dim], type[types, dim], out[tokens, dim],
//                    tokens, seq_len, dim, vocab, types, max_pos, bad)
//       out[t] = word[word_ids[t]] + pos[p] + type[type_ids[t]] (type 0 when null), p the
//       token's position: pos_ids[t], or t % seq_len for a padded batch when null (packed
//       batches give each token its position within its own sequence):
//       BERT's three embeddings summed in one pass (LayerNorm follows, layernorm.cu).
//       An id out of range writes a NaN row and records the smallest such token index in
//       *bad (when bad is not null; initialise it to INT_MAX), so garbage cannot pass silently.
//   embedding_bwd_f32(ids[tokens], dy[tokens, dim] f32, dtable[vocab, dim] f32, tokens, dim)
//       dtable[ids[t]] += dy[t] with atomics: the order of additions to a repeated id is not
//       fixed, so results may differ in the last bits between runs.
//   gather_rows_T(x[_, cols], rows[n], y[n, cols], n, cols)
//       y[i] = x[rows[i]]: the hidden states of the masked positions (the MLM head) and of each
//       sequence's first token (the pooler). Rows are valid (checked on the host). The backward
//       is embedding_bwd_f32 with rows as the ids.
//   position_bwd_f32(dy[tokens, dim], dpos[max_pos, dim], tokens, seq_len, dim)
//       dpos[s] += sum over the batch of dy[b, s]; deterministic (one thread per (s, column)).

template <typename T>
__device__ __forceinline__ void bert_embed(const int* word_ids, const int* type_ids,
                                           const int* pos_ids, const T* word, const T* pos,
                                           const T* type, T* out, int tokens, int seq_len,
                                           int dim, int vocab, int types, int max_pos, int* bad) {
    GRID_STRIDE(e, (i64)tokens * dim) {
        const int t = (int)(e / dim), c = (int)(e % dim);
        const int w = word_ids[t], ty = type_ids ? type_ids[t] : 0;
        const int ps = pos_ids ? pos_ids[t] : t % seq_len;
        float v;
        if (w < 0 || w >= vocab || ty < 0 || ty >= types || ps < 0 || ps >= max_pos) {
            v = __int_as_float(0x7fc00000);
            if (bad) atomicMin(bad, t);
        } else {
            v = to_f(word[(i64)w * dim + c]) + to_f(pos[(i64)ps * dim + c]) +
                to_f(type[(i64)ty * dim + c]);
        }
        out[e] = from_f<T>(v);
    }
}

#define EMBED(T, S)                                                                              \
    extern "C" __global__ void bert_embed_fwd_##S(                                              \
        const int* word_ids, const int* type_ids, const int* pos_ids, const T* word,            \
        const T* pos, const T* type, T* out, int tokens, int seq_len, int dim, int vocab,        \
        int types, int max_pos, int* bad) {                                                      \
        bert_embed<T>(word_ids, type_ids, pos_ids, word, pos, type, out, tokens, seq_len, dim,   \
                      vocab, types, max_pos, bad);                                               \
    }

EMBED(float, f32)
EMBED(bf16, bf16)

extern "C" __global__ void embedding_bwd_f32(const int* ids, const float* dy, float* dtable,
                                             int tokens, int dim) {
    GRID_STRIDE(e, (i64)tokens * dim) {
        const int t = (int)(e / dim), c = (int)(e % dim);
        atomicAdd(dtable + (i64)ids[t] * dim + c, dy[e]);
    }
}

extern "C" __global__ void position_bwd_f32(const float* dy, float* dpos, int tokens, int seq_len,
                                            int dim) {
    GRID_STRIDE(e, (i64)seq_len * dim) {
        const int s = (int)(e / dim), c = (int)(e % dim);
        float acc = 0.f;
        for (int t = s; t < tokens; t += seq_len) acc += dy[(i64)t * dim + c];
        dpos[e] += acc;
    }
}

#define GATHER(T, S)                                                                             \
    extern "C" __global__ void gather_rows_##S(const T* x, const int* rows, T* y, int n,         \
                                               int cols) {                                       \
        GRID_STRIDE(e, (i64)n * cols) {                                                          \
            const int i = (int)(e / cols), c = (int)(e % cols);                                  \
            y[e] = x[(i64)rows[i] * cols + c];                                                   \
        }                                                                                        \
    }

GATHER(float, f32)
GATHER(bf16, bf16)
