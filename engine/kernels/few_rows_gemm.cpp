// y (M, N) = x (M, K) . w (N, K)^T for fp32 on the CPU, for the few rows of batched decode
// through PyTorch modules (engine/kernels/cpu_linear.py). The product itself is in cpu_kernels.h.

#include "cpu_kernels.h"

extern "C" void few_rows_linear(const float* x, int64_t M, int64_t K, const float* w, int64_t N, float* y,
                                int threads) {
#pragma omp parallel num_threads(threads)
    cpu_kernels::product(x, M, K, w, N, cpu_kernels::Output{y, nullptr, false});
}
