// Weight matrices quantized into cpu_quant.h's layout (engine/kernels/quantize.py calls it).
//
// The arithmetic is llama.cpp's reference quantization of Q8_0 and Q4_0 blocks, step by
// step as the gguf package writes it, so the values and fp16 scales are the same bits as
// a GGUF file's: Q8_0 scale = max|x| / 127, q = round(x / scale) with halves away from
// zero; Q4_0 scale = (the value of largest magnitude, the first on ties) / -8,
// q = trunc(x / scale + 8.5) clipped to 0..15. "x / scale" is x times the float
// reciprocal, as there; and no multiply-add is fused (a fused one rounds once where the
// reference rounds twice), hence the function attribute.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_quant.h"

namespace {

using cpu_quant::kBlock;
using cpu_quant::kPair;

uint16_t float_to_half(float value) {
    const _Float16 half = static_cast<_Float16>(value);  // rounds to nearest, ties to even
    uint16_t bits;
    std::memcpy(&bits, &half, sizeof bits);
    return bits;
}

// One block of 32 (n real values, the rest zero): its values q and its scale.
__attribute__((optimize("fp-contract=off")))
void quantize_block(const float* x, int64_t n, int64_t kind, int8_t* q, uint16_t* scale) {
    float block[kBlock] = {};
    std::memcpy(block, x, n * sizeof(float));
    if (kind == cpu_quant::kQ8) {
        float most = 0.0f;
        for (int i = 0; i < kBlock; i++) most = std::fmax(most, std::fabs(block[i]));
        const float d = most / 127.0f;
        const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
        for (int i = 0; i < kBlock; i++) q[i] = static_cast<int8_t>(std::roundf(block[i] * inverse));
        *scale = float_to_half(d);
    } else {
        int largest = 0;
        for (int i = 1; i < kBlock; i++)
            if (std::fabs(block[i]) > std::fabs(block[largest])) largest = i;
        const float d = block[largest] / -8.0f;
        const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
        for (int i = 0; i < kBlock; i++) {
            const float scaled = block[i] * inverse;
            const float shifted = std::trunc(scaled + 8.5f);
            q[i] = static_cast<int8_t>(std::fmin(std::fmax(shifted, 0.0f), 15.0f)) - 8;
        }
        *scale = float_to_half(d);
    }
}

}  // namespace

// w (rows, columns) fp32 -> data (rows, pairs * pair_bytes) and scales (rows, 2 * pairs)
// fp16, pairs = ceil(columns / 64); rows shared among `threads` threads.
extern "C" void quantize_weights(const float* w, int64_t rows, int64_t columns, int64_t kind, uint8_t* data,
                                 uint16_t* scales, int threads) {
    const int64_t pairs = cpu_quant::pairs_of(columns), row_bytes = pairs * cpu_quant::pair_bytes(kind);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t p = 0; p < pairs; p++) {
            int8_t q[kPair];
            for (int64_t half = 0; half < 2; half++) {
                const int64_t start = p * kPair + half * kBlock;
                const int64_t n = start >= columns ? 0 : (columns - start < kBlock ? columns - start : kBlock);
                quantize_block(w + r * columns + start, n, kind, q + half * kBlock, scales + r * 2 * pairs + 2 * p + half);
            }
            uint8_t* out = data + r * row_bytes + p * cpu_quant::pair_bytes(kind);
            if (kind == cpu_quant::kQ8) {
                for (int i = 0; i < kPair; i++) out[i] = static_cast<uint8_t>(q[i] + 128);
            } else {
                for (int i = 0; i < kPair / 2; i++)
                    out[i] = static_cast<uint8_t>((q[i] + 8) | ((q[i + kPair / 2] + 8) << 4));
            }
        }
    }
}
