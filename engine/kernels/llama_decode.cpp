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
// weights: per layer kPerLayer entries in the order of `Slot`, then the final norm and the
// LM head; an entry is three int64s, a `cpu_quant::Matrix`: the tensor's address (0 for a
// missing bias), and for a weight matrix kept in 8 or 4 bits (cpu_quant.h) its scales'
// address and its kind (0 for fp32). When any matrix is quantized, the inputs of every
// product are quantized too (once per input, whatever number of matrices read it).

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_quant.h"

namespace {

using cpu_kernels::Output;
using cpu_kernels::dot;
using cpu_kernels::hmax;
using cpu_kernels::hsum;
using cpu_kernels::load_part;
using cpu_kernels::product;
using cpu_kernels::store_part;
using cpu_kernels::sum_each;
using cpu_kernels::v16;

// 0, 1, ..., 15: lane numbers, for masks.
const v16 kLane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

enum Slot {
    kInputNorm, kQ, kK, kV, kQBias, kKBias, kVBias, kO, kOBias,
    kPostNorm, kGate, kUp, kDown, kGateBias, kUpBias, kDownBias, kPerLayer
};

using cpu_quant::Matrix;
using cpu_quant::QuantPair;

struct Dims {
    int64_t rows, layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;
    int64_t block_size, table_stride, max_length;
};

// One product input: fp32 rows, and where quantized weights read it, its rows quantized.
struct Input {
    float* x;            // (rows, K)
    QuantPair* quantized;  // (rows, pairs_of(K)), or null when no matrix reading it is quantized
    int64_t K;
};

// Quantizes row r of an input for the quantized products, if it has any.
inline void quantize_input_row(const Input& in, int64_t r) {
    if (in.quantized) cpu_quant::quantize_row(in.x + r * in.K, in.K, in.quantized + r * cpu_quant::pairs_of(in.K));
}

// Every row of an input quantized, rows shared among the threads.
void quantize_input(const Input& in, int64_t rows) {
    if (!in.quantized) return;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) quantize_input_row(in, r);
}

// out (rows, N) = in . w^T with w in whichever form the table gives.
inline void product_of(const Input& in, int64_t rows, const Matrix& w, int64_t N, const Output& out) {
    if (w.kind == cpu_quant::kF32)
        product(in.x, rows, in.K, static_cast<const float*>(w.data), N, out);
    else
        cpu_quant::product(in.quantized, rows, in.K, w, N, out);
}

// h[r] = x[r] / rms(x[r]) * weight, one row per thread at a time (and h's rows quantized).
void rms_norm_rows(const float* x, const float* weight, const Input& h, int64_t rows, float eps) {
    const int64_t d = h.K;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * d;
        const float inverse = 1.0f / std::sqrt(dot(xr, xr, d) / d + eps);
        for (int64_t i = 0; i < d; i++) h.x[r * d + i] = weight[i] * (xr[i] * inverse);
        quantize_input_row(h, r);
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

// Where kv head `head` of one layer's cache keeps the k (or v) of the first token of
// `block`; the block's other tokens follow, token_stride(s) floats apart.
inline int64_t block_offset(const Dims& s, int64_t block, int64_t head) {
    return (block * s.block_size * s.kv_heads + head) * s.head_dim;
}

// Floats from one cached token's k (or v) to the next token's, for the same kv head.
inline int64_t token_stride(const Dims& s) { return s.kv_heads * s.head_dim; }

// Where token t of row r keeps its k (or v) for kv head `head` in one layer's cache.
inline int64_t cache_offset(const Dims& s, const int64_t* table, int64_t t, int64_t head) {
    return block_offset(s, table[t / s.block_size], head) + t % s.block_size * token_stride(s);
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

// q . k_i for the n <= 16 tokens whose keys start at k, `stride` floats apart: lane i is
// token i's dot product (lanes from n on are 0). kAll16 says n is 16, so no lane is
// skipped and the 16 sums stay in registers.
template <bool kAll16>
inline v16 scores_of(const float* q, const float* k, int64_t stride, int64_t n, int64_t D) {
    v16 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = v16{};
    for (int64_t c = 0; c < D; c += 16) {
        const int64_t lanes = std::min<int64_t>(16, D - c);
        const v16 qc = load_part(q + c, lanes);
        for (int i = 0; i < 16; i++)
            if (kAll16 || i < n) acc[i] += qc * load_part(k + i * stride + c, lanes);
    }
    return sum_each(acc);
}

// Asks for one kv head's k (or v) of the first n tokens of a cache block to be brought
// into L2. Blocks lie wherever the block table says, so the hardware prefetchers, which
// follow one address stream, lose the way at every block boundary.
inline void prefetch_block(const Dims& s, const float* cache, int64_t block, int64_t kv, int64_t n) {
    const float* first = cache + block_offset(s, block, kv);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < s.head_dim; c += 16)
            __builtin_prefetch(first + i * token_stride(s) + c, 0, cpu_kernels::kPrefetchLocality);
}

// Lanes [0, n) set.
inline cpu_kernels::i16 lanes_below(int64_t n) { return kLane < static_cast<float>(n); }

// out[g] = sum over a row's tokens t of p_g(t) v(t) / inverse[g], for the kHeads query
// heads g of one kv head whose softmax numerators p_g are rows of `score`: 16 lanes of the
// head dimension at a time, each cached v read once for all heads, whose sums stay in
// registers (hence a template: with the head count known, none is kept in memory).
template <int kHeads>
void weigh_values_of(const Dims& s, const float* v_cache, const int64_t* table, int64_t kv, int64_t length,
                     const float* score, const float* inverse, float* out) {
    const int64_t D = s.head_dim, stride = token_stride(s);
    for (int64_t c = 0; c < D; c += 16) {
        const int64_t lanes = std::min<int64_t>(16, D - c);
        v16 acc[kHeads];
        for (int g = 0; g < kHeads; g++) acc[g] = v16{};
        for (int64_t start = 0, b = 0; start < length; start += s.block_size, b++) {
            const float* v = v_cache + block_offset(s, table[b], kv) + c;
            const int64_t n = std::min(s.block_size, length - start);
            for (int64_t i = 0; i < n; i++) {
                const v16 vt = load_part(v + i * stride, lanes);
                for (int g = 0; g < kHeads; g++) acc[g] += score[g * s.max_length + start + i] * vt;
            }
        }
        for (int g = 0; g < kHeads; g++) store_part(out + g * D + c, acc[g] * inverse[g], lanes);
    }
}

// weigh_values_of for 1 to kHeadsAtOnce heads.
void weigh_values(const Dims& s, const float* v_cache, const int64_t* table, int64_t kv, int64_t length,
                  int64_t heads, const float* score, const float* inverse, float* out) {
    static_assert(kHeadsAtOnce == 8, "one case per head count");
    switch (heads) {
        case 1: return weigh_values_of<1>(s, v_cache, table, kv, length, score, inverse, out);
        case 2: return weigh_values_of<2>(s, v_cache, table, kv, length, score, inverse, out);
        case 3: return weigh_values_of<3>(s, v_cache, table, kv, length, score, inverse, out);
        case 4: return weigh_values_of<4>(s, v_cache, table, kv, length, score, inverse, out);
        case 5: return weigh_values_of<5>(s, v_cache, table, kv, length, score, inverse, out);
        case 6: return weigh_values_of<6>(s, v_cache, table, kv, length, score, inverse, out);
        case 7: return weigh_values_of<7>(s, v_cache, table, kv, length, score, inverse, out);
        default: return weigh_values_of<8>(s, v_cache, table, kv, length, score, inverse, out);
    }
}

// Softmax attention of each row's query heads over the row's tokens 0..position. Work is
// handed out per (row, kv head): the query heads sharing that kv head (GQA) read each
// cached k and v once between them, where one item per query head read them `group`
// times. Tokens are walked block by block, so finding a token's k and v costs no division,
// and scored 16 at a time, their 16 dot products summed across lanes at once.
//
// Where the output feeds quantized products and one kv head's query heads fill whole
// pairs of quantization blocks (group * head_dim a multiple of 64, as in every model
// seen), each item quantizes its heads' outputs while they are in L1, saving a pass and
// a barrier; it returns whether it did (else the caller quantizes the output).
bool attend(const Dims& s, const float* q, const float* k_cache, const float* v_cache, const int64_t* tables,
            const int64_t* positions, float* scores, const Input& output) {
    const int64_t D = s.head_dim, group = s.heads / s.kv_heads, stride = token_stride(s);
    float* out = output.x;
    const bool quantize = output.quantized && group * D % cpu_quant::kPair == 0;
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
            v16 top[kHeadsAtOnce];
            for (int64_t g = 0; g < heads; g++) top[g] = v16{} - INFINITY;
            const int64_t blocks = (length + s.block_size - 1) / s.block_size;
            prefetch_block(s, v_cache, table[0], kv, std::min(s.block_size, length));
            for (int64_t start = 0, b = 0; start < length; start += s.block_size, b++) {
                const float* k = k_cache + block_offset(s, table[b], kv);
                const int64_t in_block = std::min(s.block_size, length - start);
                if (b + 1 < blocks) {
                    const int64_t in_next = std::min(s.block_size, length - start - s.block_size);
                    prefetch_block(s, k_cache, table[b + 1], kv, in_next);
                    prefetch_block(s, v_cache, table[b + 1], kv, in_next);
                }
                for (int64_t i = 0; i < in_block; i += 16) {
                    const int64_t n = std::min<int64_t>(16, in_block - i);
                    const auto real = lanes_below(n);
                    for (int64_t g = 0; g < heads; g++) {
                        const float* kg = k + i * stride;
                        const v16 x = (n == 16 ? scores_of<true>(qh + g * D, kg, stride, n, D)
                                               : scores_of<false>(qh + g * D, kg, stride, n, D)) * scale;
                        store_part(score + g * s.max_length + start + i, x, n);
                        top[g] = (real & (x > top[g])) ? x : top[g];
                    }
                }
            }
            float inverse[kHeadsAtOnce];
            for (int64_t g = 0; g < heads; g++) {
                float* sg = score + g * s.max_length;
                const float most = hmax(top[g]);
                v16 total{};
                for (int64_t t = 0; t < length; t += 16) {
                    const int64_t n = std::min<int64_t>(16, length - t);
                    const v16 e = cpu_kernels::exp(load_part(sg + t, n) - most);
                    store_part(sg + t, e, n);
                    total += lanes_below(n) ? e : v16{};
                }
                inverse[g] = 1.0f / hsum(total);
            }
            weigh_values(s, v_cache, table, kv, length, heads, score, inverse, out + head0 * D);
        }
        if (quantize) {
            const int64_t start = (r * s.heads + kv * group) * D, pairs = group * D / cpu_quant::kPair;
            for (int64_t p = 0; p < pairs; p++)
                cpu_quant::quantize_pair(out + start + p * cpu_quant::kPair, cpu_quant::kPair,
                                         output.quantized[start / cpu_quant::kPair + p]);
        }
    }
    return quantize;
}

// silu(g) * u for n <= 16 values in place of g.
inline void swiglu_part(float* gate, const float* up, int64_t n) {
    const v16 g = load_part(gate, n);
    store_part(gate, g / (1.0f + cpu_kernels::exp(-g)) * load_part(up, n), n);
}

// gate = silu(gate) * up, elementwise, 16 at a time; every element takes the same vector
// exp wherever the threads' shares begin, so a row's result does not depend on the batch.
// Where gate feeds quantized products, the threads take 64 values of a row at a time and
// quantize them while they are in L1, which saves a pass and a barrier.
void swiglu(const Input& gate, const float* up, int64_t rows) {
    const int64_t F = gate.K;
    if (!gate.quantized) {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows * F; i += 16) swiglu_part(gate.x + i, up + i, std::min<int64_t>(16, rows * F - i));
        return;
    }
    const int64_t pairs = cpu_quant::pairs_of(F);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < rows * pairs; item++) {
        const int64_t r = item / pairs, start = item % pairs * cpu_quant::kPair;
        const int64_t n = std::min(cpu_quant::kPair, F - start);
        float* g = gate.x + r * F + start;
        for (int64_t i = 0; i < n; i += 16) swiglu_part(g + i, up + r * F + start + i, std::min<int64_t>(16, n - i));
        cpu_quant::quantize_pair(g, n, gate.quantized[item]);
    }
}

}  // namespace

extern "C" void llama_decode(const int64_t* dims, float eps, const int64_t* weight_table, float* x,
                             const float* cos, const float* sin, float* k_cache, float* v_cache,
                             int64_t cache_layer_stride, const int64_t* tables, const int64_t* positions,
                             float* logits, int threads) {
    const Dims s{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7], dims[8], dims[9], dims[10]};
    const Matrix* weights = reinterpret_cast<const Matrix*>(weight_table);
    const int64_t B = s.rows, d = s.hidden, D = s.head_dim, F = s.intermediate;
    const int64_t q_width = s.heads * D, kv_width = s.kv_heads * D;
    const int64_t entries = s.layers * kPerLayer + 2;
    const bool quantized = std::any_of(weights, weights + entries, [](const Matrix& m) { return m.kind != cpu_quant::kF32; });
    std::vector<float> h(B * d), q(B * q_width), k(B * kv_width), v(B * kv_width), attended(B * q_width);
    std::vector<float> gate(B * F), up(B * F), scores(B * s.heads * s.max_length);
    std::vector<QuantPair> hq, attended_q, gate_q;
    if (quantized) {
        hq.resize(B * cpu_quant::pairs_of(d));
        attended_q.resize(B * cpu_quant::pairs_of(q_width));
        gate_q.resize(B * cpu_quant::pairs_of(F));
    }
    const Input h_in{h.data(), quantized ? hq.data() : nullptr, d};
    const Input attended_in{attended.data(), quantized ? attended_q.data() : nullptr, q_width};
    const Input gate_in{gate.data(), quantized ? gate_q.data() : nullptr, F};

#pragma omp parallel num_threads(threads)
    {
        for (int64_t layer = 0; layer < s.layers; layer++) {
            const Matrix* w = weights + layer * kPerLayer;
            auto vector = [&](Slot slot) { return static_cast<const float*>(w[slot].data); };
            float* kc = k_cache + layer * cache_layer_stride;
            float* vc = v_cache + layer * cache_layer_stride;
            rms_norm_rows(x, vector(kInputNorm), h_in, B, eps);
            product_of(h_in, B, w[kQ], q_width, Output{q.data(), vector(kQBias), false});
            product_of(h_in, B, w[kK], kv_width, Output{k.data(), vector(kKBias), false});
            product_of(h_in, B, w[kV], kv_width, Output{v.data(), vector(kVBias), false});
#pragma omp barrier
            rotate_and_store(s, q.data(), k.data(), v.data(), cos, sin, kc, vc, tables, positions);
            if (!attend(s, q.data(), kc, vc, tables, positions, scores.data(), attended_in))
                quantize_input(attended_in, B);
            product_of(attended_in, B, w[kO], d, Output{x, vector(kOBias), true});
#pragma omp barrier
            rms_norm_rows(x, vector(kPostNorm), h_in, B, eps);
            product_of(h_in, B, w[kGate], F, Output{gate.data(), vector(kGateBias), false});
            product_of(h_in, B, w[kUp], F, Output{up.data(), vector(kUpBias), false});
#pragma omp barrier
            swiglu(gate_in, up.data(), B);
            product_of(gate_in, B, w[kDown], d, Output{x, vector(kDownBias), true});
#pragma omp barrier
        }
        const Matrix* tail = weights + s.layers * kPerLayer;
        rms_norm_rows(x, static_cast<const float*>(tail[0].data), h_in, B, eps);
        product_of(h_in, B, tail[1], s.vocab, Output{logits, nullptr, false});
    }
}
