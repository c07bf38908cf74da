// One decode step of a Llama-family model for B sequences, fp32 on the CPU, in one call.
//
// Each row feeds one token; the step runs every layer (RMSNorm, q/k/v products, rotary,
// writing the new k/v into the paged cache, attention over the row's cached tokens, output
// product and residual, RMSNorm, SwiGLU MLP and residual), the final norm and the LM head,
// and leaves the logits. It is one OpenMP parallel region: the threads split each
// operation's work and meet at a barrier before the next, so a step costs no Python or
// PyTorch dispatch per operation, which on this project's CPU was as much time as the
// weight reads themselves.
//
// Every row's arithmetic is the same whatever other rows share the step (products in a
// fixed lane order, norms and attention per row), so a sequence decodes to the same bits
// alone or in a batch.
//
// Layouts (all contiguous fp32 unless said):
//   x          (B, hidden) the fed tokens' embeddings; overwritten with the residual stream
//   cos, sin   (B, head_dim) rotary factors at each row's position
//   k/v cache  (layers, blocks, block_size, kv_heads, head_dim)
//   tables     (B, table_stride) int64 block ids of each row's cache
//   positions  (B,) int64 position of the fed token (tokens before it are cached)
//   logits     (B, vocab)
// weights: per layer kPerLayer addresses in the order of `Slot` (biases may be 0), then
// the final norm and the LM head.

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_kernels.h"

namespace {

using cpu_kernels::Output;
using cpu_kernels::dot;
using cpu_kernels::product;

enum Slot {
    kInputNorm, kQ, kK, kV, kQBias, kKBias, kVBias, kO, kOBias,
    kPostNorm, kGate, kUp, kDown, kGateBias, kUpBias, kDownBias, kPerLayer
};

struct Dims {
    int64_t rows, layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;
    int64_t block_size, table_stride, max_length;
};

// h[r] = x[r] / rms(x[r]) * weight, one row per thread at a time.
void rms_norm_rows(const float* x, const float* weight, float* h, int64_t rows, int64_t d, float eps) {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * d;
        const float inverse = 1.0f / std::sqrt(dot(xr, xr, d) / d + eps);
        for (int64_t i = 0; i < d; i++) h[r * d + i] = weight[i] * (xr[i] * inverse);
    }
}

// Rotate one head in place: x * cos + rotate_half(x) * sin.
inline void rotate(float* x, const float* cos, const float* sin, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t i = 0; i < half; i++) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

// Where token t of row r keeps its k (or v) for kv head `head` in one layer's cache.
inline int64_t cache_offset(const Dims& s, const int64_t* table, int64_t t, int64_t head) {
    const int64_t slot = table[t / s.block_size] * s.block_size + t % s.block_size;
    return (slot * s.kv_heads + head) * s.head_dim;
}

// Rotary on q and k, then the new k and v into each row's cache slot.
void rotate_and_store(const Dims& s, float* q, float* k, const float* v, const float* cos, const float* sin,
                      float* k_cache, float* v_cache, const int64_t* tables, const int64_t* positions) {
    const int64_t D = s.head_dim;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < s.rows; r++) {
        const float *c = cos + r * D, *sn = sin + r * D;
        for (int64_t h = 0; h < s.heads; h++) rotate(q + (r * s.heads + h) * D, c, sn, D);
        for (int64_t h = 0; h < s.kv_heads; h++) {
            float* kh = k + (r * s.kv_heads + h) * D;
            rotate(kh, c, sn, D);
            const int64_t at = cache_offset(s, tables + r * s.table_stride, positions[r], h);
            std::memcpy(k_cache + at, kh, D * sizeof(float));
            std::memcpy(v_cache + at, v + (r * s.kv_heads + h) * D, D * sizeof(float));
        }
    }
}

// The query heads of one kv head that `attend` takes together: their value sums stay in
// registers while each cached value vector is read once for all of them.
constexpr int64_t kHeadsAtOnce = 8;

// Softmax attention of each row's query heads over the row's tokens 0..position. Work is
// handed out per (row, kv head): the query heads sharing that kv head (GQA) read each
// cached k and v once between them, where one item per query head read them `group`
// times. Tokens are walked block by block, so finding a token's k and v costs no division.
void attend(const Dims& s, const float* q, const float* k_cache, const float* v_cache, const int64_t* tables,
            const int64_t* positions, float* scores, float* out) {
    using cpu_kernels::load;
    using cpu_kernels::v16;
    const int64_t D = s.head_dim, group = s.heads / s.kv_heads, token_stride = s.kv_heads * D;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    // Rows differ in length, so items are handed out as threads come free.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < s.rows * s.kv_heads; item++) {
        const int64_t r = item / s.kv_heads, kv = item % s.kv_heads;
        const int64_t length = positions[r] + 1;
        const int64_t* table = tables + r * s.table_stride;
        for (int64_t first = 0; first < group; first += kHeadsAtOnce) {
            const int64_t heads = std::min(kHeadsAtOnce, group - first);
            const int64_t head0 = r * s.heads + kv * group + first;  // (row, query head) index of the first
            const float* qh = q + head0 * D;
            float* score = scores + head0 * s.max_length;  // one row of max_length per head
            float top[kHeadsAtOnce], inverse[kHeadsAtOnce];
            for (int64_t g = 0; g < heads; g++) top[g] = -INFINITY;
            for (int64_t start = 0, b = 0; start < length; start += s.block_size, b++) {
                const float* k = k_cache + (table[b] * s.block_size * s.kv_heads + kv) * D;
                const int64_t n = std::min(s.block_size, length - start);
                for (int64_t i = 0; i < n; i++) {
                    for (int64_t g = 0; g < heads; g++) {
                        const float x = dot(qh + g * D, k + i * token_stride, D) * scale;
                        score[g * s.max_length + start + i] = x;
                        top[g] = x > top[g] ? x : top[g];
                    }
                }
            }
            for (int64_t g = 0; g < heads; g++) {
                float* sg = score + g * s.max_length;
                float total = 0.0f;
                for (int64_t t = 0; t < length; t++) total += sg[t] = std::exp(sg[t] - top[g]);
                inverse[g] = 1.0f / total;
            }
            // o = sum over tokens of p * v, 16 lanes of every head at a time, in registers.
            for (int64_t c = 0; c < D; c += 16) {
                const int64_t lanes = std::min<int64_t>(16, D - c);
                v16 acc[kHeadsAtOnce] = {};
                for (int64_t start = 0, b = 0; start < length; start += s.block_size, b++) {
                    const float* v = v_cache + (table[b] * s.block_size * s.kv_heads + kv) * D + c;
                    const int64_t n = std::min(s.block_size, length - start);
                    for (int64_t i = 0; i < n; i++) {
                        v16 vt{};
                        if (lanes == 16) vt = load(v + i * token_stride);
                        else for (int64_t j = 0; j < lanes; j++) vt[j] = v[i * token_stride + j];
                        for (int64_t g = 0; g < kHeadsAtOnce; g++)
                            if (g < heads) acc[g] += score[g * s.max_length + start + i] * vt;
                    }
                }
                for (int64_t g = 0; g < heads; g++)
                    for (int64_t j = 0; j < lanes; j++) out[(head0 + g) * D + c + j] = acc[g][j] * inverse[g];
            }
        }
    }
}

// gate = silu(gate) * up, elementwise.
void swiglu(float* gate, const float* up, int64_t n) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace

extern "C" void llama_decode(const int64_t* dims, float eps, const int64_t* weight_addresses, float* x,
                             const float* cos, const float* sin, float* k_cache, float* v_cache,
                             int64_t cache_layer_stride, const int64_t* tables, const int64_t* positions,
                             float* logits, int threads) {
    const Dims s{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7], dims[8], dims[9], dims[10]};
    const float* const* weights = reinterpret_cast<const float* const*>(weight_addresses);
    const int64_t B = s.rows, d = s.hidden, D = s.head_dim, F = s.intermediate;
    const int64_t q_width = s.heads * D, kv_width = s.kv_heads * D;
    std::vector<float> h(B * d), q(B * q_width), k(B * kv_width), v(B * kv_width), attended(B * q_width);
    std::vector<float> gate(B * F), up(B * F), scores(B * s.heads * s.max_length);

#pragma omp parallel num_threads(threads)
    {
        for (int64_t layer = 0; layer < s.layers; layer++) {
            const float* const* w = weights + layer * kPerLayer;
            float* kc = k_cache + layer * cache_layer_stride;
            float* vc = v_cache + layer * cache_layer_stride;
            rms_norm_rows(x, w[kInputNorm], h.data(), B, d, eps);
            product(h.data(), B, d, w[kQ], q_width, Output{q.data(), w[kQBias], false});
            product(h.data(), B, d, w[kK], kv_width, Output{k.data(), w[kKBias], false});
            product(h.data(), B, d, w[kV], kv_width, Output{v.data(), w[kVBias], false});
#pragma omp barrier
            rotate_and_store(s, q.data(), k.data(), v.data(), cos, sin, kc, vc, tables, positions);
            attend(s, q.data(), kc, vc, tables, positions, scores.data(), attended.data());
            product(attended.data(), B, q_width, w[kO], d, Output{x, w[kOBias], true});
#pragma omp barrier
            rms_norm_rows(x, w[kPostNorm], h.data(), B, d, eps);
            product(h.data(), B, d, w[kGate], F, Output{gate.data(), w[kGateBias], false});
            product(h.data(), B, d, w[kUp], F, Output{up.data(), w[kUpBias], false});
#pragma omp barrier
            swiglu(gate.data(), up.data(), B * F);
            product(gate.data(), B, F, w[kDown], d, Output{x, w[kDownBias], true});
#pragma omp barrier
        }
        const float* const* tail = weights + s.layers * kPerLayer;
        rms_norm_rows(x, tail[0], h.data(), B, d, eps);
        product(h.data(), B, d, tail[1], s.vocab, Output{logits, nullptr, false});
    }
}
