// Shared pieces of the engine's C++ CPU kernels (few_rows_gemm.cpp, llama_decode.cpp):
// 16-lane float vectors and the few-row product y = x . w^T (+ bias) (+= y).
//
// Decoding a handful of sequences reads every weight once per step but does only a few
// multiply-adds per weight, so the product is bound by how fast the weights stream in
// from memory. The loop order below keeps that stream going: each thread takes blocks of
// NB consecutive weight rows (outputs); a block is read from memory once, while every
// input row is multiplied against it from L1; and the next block is prefetched into L2
// while the current one is computed. Each output is a dot product accumulated in 16-lane
// vectors, in the same order whatever the number of rows M is, so a row's result does not
// depend on which other rows share the batch.
//
// GCC's vector extensions become AVX-512, AVX2 or SSE code, whatever the machine has
// (the library is built with -march=native by engine/kernels/native_library.py).

#pragma once

#include <cstdint>
#include <cstring>

namespace cpu_kernels {

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef int32_t i16 __attribute__((vector_size(64)));  // also what comparing two v16 gives: -1 true, 0 false

inline v16 load(const float* p) {
    v16 v;
    std::memcpy(&v, p, sizeof v);  // unaligned load
    return v;
}

// The first `lanes` (1-16) floats at p, the other lanes zero.
inline v16 load_part(const float* p, int64_t lanes) {
    if (lanes == 16) return load(p);
    v16 v{};
    std::memcpy(&v, p, lanes * sizeof(float));
    return v;
}

// Writes the first `lanes` (1-16) lanes of v to p.
inline void store_part(float* p, v16 v, int64_t lanes) { std::memcpy(p, &v, lanes * sizeof(float)); }

// The sum of a vector's lanes, as a tree of half-width adds (the same order everywhere).
inline float hsum(v16 v) {
    const v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

// The largest lane.
inline float hmax(v16 v) {
    float top = v[0];
    for (int i = 1; i < 16; i++) top = v[i] > top ? v[i] : top;
    return top;
}

// Sixteen horizontal sums at once: lane i of the result is the sum of acc[i]'s lanes.
// Each step adds the two halves of every pair of vectors in one instruction, so the 16
// sums take 15 adds where 16 separate hsums take 48 and as many scalar moves.
inline v16 sum_each(const v16 (&acc)[16]) {
    v16 halves[8], quarters[4], eighths[2];
    for (int j = 0; j < 8; j++)  // [a0..7 + a8..15 | b0..7 + b8..15]
        halves[j] = __builtin_shufflevector(acc[2 * j], acc[2 * j + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                    __builtin_shufflevector(acc[2 * j], acc[2 * j + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int j = 0; j < 4; j++)  // four lanes of each of 4 accumulators
        quarters[j] = __builtin_shufflevector(halves[2 * j], halves[2 * j + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                      __builtin_shufflevector(halves[2 * j], halves[2 * j + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int j = 0; j < 2; j++)  // two lanes of each of 8 accumulators
        eighths[j] = __builtin_shufflevector(quarters[2 * j], quarters[2 * j + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
                     __builtin_shufflevector(quarters[2 * j], quarters[2 * j + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return __builtin_shufflevector(eighths[0], eighths[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           __builtin_shufflevector(eighths[0], eighths[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// e^x lane by lane: within 1.01 ulp of the exact value for every float x in [-87, 88]
// (checked against double-precision exp); outside that range x is clamped to it (e^-87 is
// 1.6e-38, e^88 is 1.7e38). x = n ln 2 + r with |r| <= ln 2 / 2; e^r comes from a degree-6
// polynomial (Cephes' expf coefficients) and 2^n goes straight into the exponent bits.
inline v16 exp(v16 x) {
    const v16 low = v16{} - 87.0f, high = v16{} + 88.0f;
    x = x < low ? low : x;
    x = x > high ? high : x;
    const v16 round = v16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const v16 n = (x * 1.44269504088896341f + round) - round;
    const v16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 in two parts
    v16 p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const v16 er = p * (r * r) + r + 1.0f;
    const i16 bits = (__builtin_convertvector(n, i16) + 127) << 23;
    return er * (v16)bits;  // a vector cast keeps the bits
}

// a . b over n floats, in the same lane order as the product's tiles.
inline float dot(const float* a, const float* b, int64_t n) {
    v16 acc{};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc += load(a + i) * load(b + i);
    float sum = hsum(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// How far ahead of the current k the next block's rows are prefetched, in floats.
constexpr int64_t kPrefetchAhead = 256;
// Prefetches go to L2 (locality 2: prefetcht1), not L1. With 8 rows of K = 576 the
// inputs (18 KB) plus the current and next weight blocks (7 KB each) fill a 32 KB L1, so
// prefetching into L1 evicted lines still in use; the L2 prefetch measured faster at 1, 4
// and 8 rows (bench/kernel_ab.py; figures in docs/performance.md, Engine notes).
constexpr int kPrefetchLocality = 2;

// What a product does with each finished dot product.
struct Output {
    float* y;            // (M, N), row stride N
    const float* bias;   // (N,) added to every row, or null
    bool accumulate;     // y += result (a residual connection) rather than y = result
};

// Rows [0, mr) of x against weight rows [0, nb) of w; MR and NB fix the register tile
// (MR * NB accumulators), mr <= MR and nb <= NB say how much of it is real. `n` is the
// first output column of the block.
template <int MR, int NB>
inline void tile(const float* x, const float* w, const float* next_w, int64_t K, int64_t N, int64_t n,
                 const Output& out, int mr, int nb) {
    v16 acc[MR][NB];
    for (int m = 0; m < MR; m++)
        for (int j = 0; j < NB; j++) acc[m][j] = v16{};
    auto step = [&](int64_t k) {  // 16 lanes of k for every accumulator
        v16 wv[NB];
        for (int j = 0; j < NB; j++) wv[j] = load(w + j * K + k);
        for (int j = 0; j < NB; j++) __builtin_prefetch(next_w + j * K + k + kPrefetchAhead, 0, kPrefetchLocality);
        for (int m = 0; m < MR; m++) {
            const v16 xv = load(x + m * K + k);
            for (int j = 0; j < NB; j++) acc[m][j] += xv * wv[j];
        }
    };
    int64_t k = 0;
    // GCC unrolls the 8-row tile's loop by two, which made the decode step faster at 8 rows
    // and more; unrolling the 4-row tile made 4 rows slower, and 1 row did not change
    // (bench/kernel_ab.py; docs/performance.md). Calling step twice per iteration by hand
    // gained little. The sums' order is the same either way.
    if constexpr (MR >= 8) {
#pragma GCC unroll 2
        for (; k + 16 <= K; k += 16) step(k);
    }
    for (; k + 16 <= K; k += 16) step(k);
    for (int m = 0; m < mr; m++) {
        for (int j = 0; j < nb; j++) {
            float sum = hsum(acc[m][j]);
            for (int64_t kk = k; kk < K; kk++) sum += x[m * K + kk] * w[j * K + kk];
            if (out.bias) sum += out.bias[n + j];
            float& y = out.y[m * N + n + j];
            y = out.accumulate ? y + sum : sum;
        }
    }
}

// The product for a caller already inside an OpenMP parallel region: the weight blocks
// are shared out among its threads, and no thread waits for the others at the end.
template <int MR, int NB>
void product_blocks(const float* x, int64_t M, int64_t K, const float* w, int64_t N, const Output& out) {
    const int64_t full_blocks = N / NB;
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < full_blocks; b++) {
        const int64_t n = b * NB;
        const float* block = w + n * K;
        const float* next = b + 1 < full_blocks ? block + NB * K : block;
        int64_t m = 0;
        for (; m + MR <= M; m += MR)
            tile<MR, NB>(x + m * K, block, next, K, N, n, Output{out.y + m * N, out.bias, out.accumulate}, MR, NB);
        // Leftover rows in the largest smaller tiles; the block is still in L1.
        if (MR > 4 && m + 4 <= M) {
            tile<4, NB>(x + m * K, block, next, K, N, n, Output{out.y + m * N, out.bias, out.accumulate}, 4, NB);
            m += 4;
        }
        if (MR > 2 && m + 2 <= M) {
            tile<2, NB>(x + m * K, block, next, K, N, n, Output{out.y + m * N, out.bias, out.accumulate}, 2, NB);
            m += 2;
        }
        if (m < M) tile<1, NB>(x + m * K, block, next, K, N, n, Output{out.y + m * N, out.bias, out.accumulate}, 1, NB);
    }
    // The last N % NB outputs, one at a time (same summation order as the tiles).
#pragma omp for schedule(static) nowait
    for (int64_t n = full_blocks * NB; n < N; n++)
        for (int64_t m = 0; m < M; m++)
            tile<1, 1>(x + m * K, w + n * K, w + n * K, K, N, n, Output{out.y + m * N, out.bias, out.accumulate}, 1, 1);
}

// y (M, N) = x (M, K) . w (N, K)^T, inside a parallel region, with the register tile
// that measured fastest for M rows with the weights coming from memory.
inline void product(const float* x, int64_t M, int64_t K, const float* w, int64_t N, const Output& out) {
    if (M == 1)  // one weight row at a time: one sequential stream reads faster than 8 interleaved
        product_blocks<1, 1>(x, M, K, w, N, out);
    else if (M == 2)
        product_blocks<2, 6>(x, M, K, w, N, out);
    else if (M <= 4)
        product_blocks<4, 6>(x, M, K, w, N, out);  // 3 rows: a 2-row and a 1-row tile
    else
        product_blocks<8, 3>(x, M, K, w, N, out);
}

}  // namespace cpu_kernels
