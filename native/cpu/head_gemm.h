// head_gemm.h: the squeeze heads' GEMMs (head_gemm.cc), shared by gate.cc's heads: small products of a batch of
// pooled contexts with a head's 1×1 weights.
#pragma once
#include <cstdint>

#include "msgc/tensor.h"

namespace msgc {

// C[M, N] = op(A) · op(B) (row-major; oneDNN's sgemm, or a loop of our own for small products)
void headSgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, float* C, int64_t ldc);
// C = A · Bᵀ (A [M, K], B [N, K]): a head's GEMMs in training, and in inference above batch 4
void headGemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C);
// C = A · Wᵀ in inference: W's rows in panels (cached on W) at batch 1-4, skipping A's all-zero columns; else headGemm
void headGemmEval(int64_t M, int64_t N, int64_t K, const float* A, const Tensor& w, float* C);

}  // namespace msgc
