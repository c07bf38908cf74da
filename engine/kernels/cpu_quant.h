// The few-row product y = x . w^T (+ bias) (+= y) with 8-bit or 4-bit block-quantized
// weights, for the C++ decode step (llama_decode.cpp); the fp32 product is cpu_kernels.h's.
//
// Weights (engine/kernels/quantize.py makes them): blocks of 32 values along each weight
// row, each with an fp16 scale, as llama.cpp's Q8_0 and Q4_0 have; a row is padded with
// zeros to a whole number of *pairs* of blocks (64 values), and a pair is stored so that
// one 64-byte vector holds its 64 values in order:
//   Q8  64 bytes per pair, value q (-127..127) stored as the unsigned byte q + 128
//   Q4  32 bytes per pair, value q (-8..7) of element i in the low nibble of byte i and of
//       element i + 32 in the high nibble, as the nibble q + 8
//   scales (rows, blocks) fp16, a block's value being q * scale
// Both kinds become the same unsigned bytes in registers: Q8's as stored, Q4's nibbles
// moved to the high half of a byte, 16 (q + 8) = 16 q + 128, with scale / 16.
//
// Inputs are quantized per row the same way, blocks of 32 with an fp32 scale, to signed
// bytes (`QuantRow`), which is what llama.cpp does with Q8_0 and Q4_0 weights too. A
// block's dot product is then exact integer arithmetic: sum (w + 128) x over the block,
// four byte products per 32-bit lane in one instruction where the CPU has AVX512-VNNI
// (vpdpbusd), less 128 sum x, which the input carries precomputed. What this saves over
// turning every weight into a float is the work per weight: one instruction per 64
// weights and input row for the products, against eight conversions and four
// multiply-adds, which at a chat's single row was as long as the weights take to arrive.
//
// A row's result does not depend on the other rows of the batch or on the tile it falls
// in: each (row, output) pair sums its blocks in the same order, in the same lanes.

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_kernels.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__F16C__)
#include <immintrin.h>
#define CPU_QUANT_VNNI 1
#endif

namespace cpu_quant {

using cpu_kernels::Output;
using cpu_kernels::v16;
using cpu_kernels::i16;

enum Kind : int64_t { kF32 = 0, kQ8 = 1, kQ4 = 2 };

constexpr int64_t kBlock = 32;  // values per scale
constexpr int64_t kPair = 64;   // values per vector: two blocks

// Stored bytes per pair of blocks.
inline int64_t pair_bytes(int64_t kind) { return kind == kQ4 ? kPair / 2 : kPair; }

// What one output's block sums are multiplied by, beyond the scales.
inline float kind_factor(int64_t kind) { return kind == kQ4 ? 1.0f / 16.0f : 1.0f; }

// A weight matrix as the decode step's table gives it.
struct Matrix {
    const void* data;        // fp32 (N, K), or quantized pairs (N, row pairs)
    const uint16_t* scales;  // quantized: fp16 (N, 2 * row pairs)
    int64_t kind;
};

// 64 values of one input row, quantized: q = x / scale rounded to the nearest integer
// (halves to even, as llama.cpp's vector code rounds inputs) per block of 32;
// `scale` lanes 0-7 hold the first block's scale and 8-15 the second's, as the product's
// lanes fall; `correction` is -128 times each block's sum of q, in lanes 0 and 8.
struct alignas(64) QuantPair {
    int8_t q[kPair];
    float scale[16];
    int32_t correction[16];
};

inline int64_t pairs_of(int64_t K) { return (K + kPair - 1) / kPair; }

// Quantizes one row of K floats into pairs_of(K) pairs (zeros past K).
// Quantizes the n (0-64) values at x into one pair (zeros past n).
inline void quantize_pair(const float* x, int64_t n, QuantPair& pair) {
    typedef int8_t c16 __attribute__((vector_size(16)));
    const v16 round = v16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer, halves to even
    for (int64_t half = 0; half < 2; half++) {
        const int64_t start = half * kBlock, count = n - start;  // values in this block: count, at most 32
        const v16 a = count > 0 ? cpu_kernels::load_part(x + start, count < 16 ? count : 16) : v16{};
        const v16 b = count > 16 ? cpu_kernels::load_part(x + start + 16, count < 32 ? count - 16 : 16) : v16{};
        const v16 magnitude_a = a < 0 ? -a : a, magnitude_b = b < 0 ? -b : b;
        const float scale = cpu_kernels::hmax(magnitude_a > magnitude_b ? magnitude_a : magnitude_b) / 127.0f;
        const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
        const i16 qa = __builtin_convertvector((a * inverse + round) - round, i16);
        const i16 qb = __builtin_convertvector((b * inverse + round) - round, i16);
        const c16 bytes_a = __builtin_convertvector(qa, c16), bytes_b = __builtin_convertvector(qb, c16);
        std::memcpy(pair.q + start, &bytes_a, 16);
        std::memcpy(pair.q + start + 16, &bytes_b, 16);
        const i16 sums = qa + qb;
        int32_t sum = 0;
        for (int lane = 0; lane < 16; lane++) sum += sums[lane];
        for (int lane = 0; lane < 8; lane++) {
            pair.scale[half * 8 + lane] = scale;
            pair.correction[half * 8 + lane] = 0;
        }
        pair.correction[half * 8] = -128 * sum;
    }
}

// Quantizes one row of K floats into pairs_of(K) pairs.
inline void quantize_row(const float* x, int64_t K, QuantPair* out) {
    for (int64_t p = 0; p < pairs_of(K); p++) {
        const int64_t n = K - p * kPair;
        quantize_pair(x + p * kPair, n < kPair ? n : kPair, out[p]);
    }
}

// An fp16 number's value.
inline float half_to_float(uint16_t h) {
#ifdef CPU_QUANT_VNNI
    return _cvtsh_ss(h);
#else
    const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu;
    float value;
    if (exponent == 0) value = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    bits |= sign;
    std::memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

#ifdef CPU_QUANT_VNNI

typedef __m512i Bytes;

// Pair p of a weight row as 64 unsigned bytes, w + 128 (times 16 for Q4, see the top).
template <int64_t kKind>
inline Bytes weight_bytes(const uint8_t* row, int64_t p) {
    if constexpr (kKind == kQ8) {
        return _mm512_loadu_si512(row + p * kPair);
    } else {
        // The 32 bytes in both halves; the low half's nibbles shifted up by 4.
        const __m512i both = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + p * 32)));
        const __m512i shifts = _mm512_set_epi64(0, 0, 0, 0, 0x0004000400040004, 0x0004000400040004,
                                                0x0004000400040004, 0x0004000400040004);
        return _mm512_and_si512(_mm512_sllv_epi16(both, shifts), _mm512_set1_epi8(static_cast<char>(0xf0)));
    }
}

// The pair's two weight scales as lanes 0-7 and 8-15.
inline v16 weight_scales(const uint16_t* scales, int64_t p) {
    uint32_t two;
    std::memcpy(&two, scales + 2 * p, sizeof two);
    const __m512 both = _mm512_zextps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(two))));
    const __m512i index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return (v16)_mm512_permutexvar_ps(index, both);
}

// Lane l: correction[l] + the sum of the 4 byte products w[4l..4l+3] x[4l..4l+3].
inline i16 block_sums(const QuantPair& x, Bytes w) {
    const __m512i xq = _mm512_load_si512(x.q);
    const __m512i start = _mm512_load_si512(x.correction);
    return (i16)_mm512_dpbusd_epi32(start, w, xq);
}

#else  // portable: the same integers, summed lane by lane

struct Bytes {
    uint8_t b[kPair];
};

template <int64_t kKind>
inline Bytes weight_bytes(const uint8_t* row, int64_t p) {
    Bytes w;
    if constexpr (kKind == kQ8) {
        std::memcpy(w.b, row + p * kPair, kPair);
    } else {
        for (int i = 0; i < 32; i++) {
            const uint8_t byte = row[p * 32 + i];
            w.b[i] = static_cast<uint8_t>(byte << 4);
            w.b[i + 32] = static_cast<uint8_t>(byte & 0xf0);
        }
    }
    return w;
}

inline v16 weight_scales(const uint16_t* scales, int64_t p) {
    const float a = half_to_float(scales[2 * p]), b = half_to_float(scales[2 * p + 1]);
    v16 out;
    for (int lane = 0; lane < 16; lane++) out[lane] = lane < 8 ? a : b;
    return out;
}

inline i16 block_sums(const QuantPair& x, const Bytes& w) {
    i16 out;
    for (int lane = 0; lane < 16; lane++) {
        int32_t sum = x.correction[lane];
        for (int t = 0; t < 4; t++) sum += static_cast<int32_t>(w.b[4 * lane + t]) * x.q[4 * lane + t];
        out[lane] = sum;
    }
    return out;
}

#endif

// Rows [0, mr) of x against weight rows [0, nb) of w, as cpu_kernels::tile does for fp32:
// each pair of the NB weight rows is read once and used for every input row.
template <int64_t kKind, int MR, int NB>
inline void tile(const QuantPair* x, int64_t pairs, const uint8_t* w, const uint16_t* scales,
                 const uint8_t* next_w, int64_t N, int64_t n, const Output& out, int mr, int nb) {
    const int64_t row_bytes = pairs * pair_bytes(kKind), row_scales = 2 * pairs;
    v16 acc[MR][NB];
    for (int m = 0; m < MR; m++)
        for (int j = 0; j < NB; j++) acc[m][j] = v16{};
    for (int64_t p = 0; p < pairs; p++) {
        Bytes wb[NB];
        v16 ws[NB];
        for (int j = 0; j < NB; j++) {
            wb[j] = weight_bytes<kKind>(w + j * row_bytes, p);
            ws[j] = weight_scales(scales + j * row_scales, p);
            __builtin_prefetch(next_w + j * row_bytes + p * pair_bytes(kKind), 0, cpu_kernels::kPrefetchLocality);
        }
        for (int m = 0; m < MR; m++) {
            const QuantPair& xp = x[m * pairs + p];
            const v16 xs = cpu_kernels::load(xp.scale);
            for (int j = 0; j < NB; j++)
                acc[m][j] += __builtin_convertvector(block_sums(xp, wb[j]), v16) * (xs * ws[j]);
        }
    }
    const float factor = kind_factor(kKind);
    for (int m = 0; m < mr; m++) {
        for (int j = 0; j < nb; j++) {
            float sum = cpu_kernels::hsum(acc[m][j]) * factor;
            if (out.bias) sum += out.bias[n + j];
            float& y = out.y[m * N + n + j];
            y = out.accumulate ? y + sum : sum;
        }
    }
}

// The product for a caller inside an OpenMP parallel region; blocks of NB weight rows are
// shared out among its threads, which do not wait for each other at the end.
template <int64_t kKind, int MR, int NB>
void product_blocks(const QuantPair* x, int64_t M, int64_t pairs, const Matrix& w, int64_t N, const Output& out) {
    const int64_t row_bytes = pairs * pair_bytes(kKind), row_scales = 2 * pairs;
    const uint8_t* data = static_cast<const uint8_t*>(w.data);
    const int64_t full_blocks = N / NB;
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < full_blocks; b++) {
        const int64_t n = b * NB;
        const uint8_t* block = data + n * row_bytes;
        const uint16_t* scales = w.scales + n * row_scales;
        const uint8_t* next = b + 1 < full_blocks ? block + NB * row_bytes : block;
        int64_t m = 0;
        for (; m + MR <= M; m += MR)
            tile<kKind, MR, NB>(x + m * pairs, pairs, block, scales, next, N, n,
                                Output{out.y + m * N, out.bias, out.accumulate}, MR, NB);
        if (MR > 2 && m + 2 <= M) {
            tile<kKind, 2, NB>(x + m * pairs, pairs, block, scales, next, N, n,
                               Output{out.y + m * N, out.bias, out.accumulate}, 2, NB);
            m += 2;
        }
        if (m < M)
            tile<kKind, 1, NB>(x + m * pairs, pairs, block, scales, next, N, n,
                               Output{out.y + m * N, out.bias, out.accumulate}, 1, NB);
    }
#pragma omp for schedule(static) nowait
    for (int64_t n = full_blocks * NB; n < N; n++)
        for (int64_t m = 0; m < M; m++)
            tile<kKind, 1, 1>(x + m * pairs, pairs, data + n * row_bytes, w.scales + n * row_scales,
                              data + n * row_bytes, N, n, Output{out.y + m * N, out.bias, out.accumulate}, 1, 1);
}

template <int64_t kKind>
void product_of_kind(const QuantPair* x, int64_t M, int64_t pairs, const Matrix& w, int64_t N, const Output& out) {
    if (M == 1)
        product_blocks<kKind, 1, 4>(x, M, pairs, w, N, out);
    else
        product_blocks<kKind, 4, 4>(x, M, pairs, w, N, out);
}

// y (M, N) = x . w^T for a quantized w, x given as quantize_row's pairs (M rows of
// pairs_of(K)), inside a parallel region.
inline void product(const QuantPair* x, int64_t M, int64_t K, const Matrix& w, int64_t N, const Output& out) {
    if (w.kind == kQ8)
        product_of_kind<kQ8>(x, M, pairs_of(K), w, N, out);
    else
        product_of_kind<kQ4>(x, M, pairs_of(K), w, N, out);
}

}  // namespace cpu_quant
