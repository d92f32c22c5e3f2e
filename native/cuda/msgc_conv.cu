// msgc_conv.cu: the MSGC convolution on the GPU, masked and gathered, by one implicit-GEMM kernel of ours (its
// per-thread steps in msgc_conv_tile.h). Gathered: a first kernel compacts, per (sample, head), the indices of the
// channels with a non-zero scale on the GPU (no host round trip, so no synchronisation); each block's reduction is
// then |S(n, g)|·k² long instead of C·k². Masked: over every channel, times the scale (the reference's arithmetic).
// Gathered, with MSGC_CUDA_GATHER=cudnn: the grouped execution (groupedForward below), cuDNN's convolution over the
// selections gathered into dense operands.
#include <algorithm>

#include <cstdlib>
#include <cstring>

#include "common.h"
#include "conv.h"
#include "epilogue.h"
#include "msgc/cuda.h"
#include "msgc_conv_tile.h"

namespace msgc {
namespace cuda {
namespace {

// idx[ng, 0..cnt) = the channels c with scale[ng, c] != 0, in increasing order; one warp per (sample, head)
__global__ void compactKernel(const float* scale, int C, int NG, int* idx, int* cnt) {
  const int ng = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (ng >= NG) return;
  const float* s = scale + (int64_t)ng * C;
  int* out = idx + (int64_t)ng * C;
  int base = 0;
  for (int c0 = 0; c0 < C; c0 += 32) {
    const int c = c0 + lane;
    const bool nz = c < C && s[c] != 0.f;  // (NaN counts as selected, as in compactChannels)
    const unsigned m = __ballot_sync(0xffffffffu, nz);
    if (nz) out[base + __popc(m & ((1u << lane) - 1u))] = c;
    base += __popc(m);
  }
  if (lane == 0) cnt[ng] = base;
}

// *out = max over cnt[0..NG) (one block)
__global__ void maxCountKernel(const int* cnt, int NG, int* out) {
  __shared__ int best[32];
  int m = 0;
  for (int i = threadIdx.x; i < NG; i += blockDim.x) m = max(m, cnt[i]);
  for (int o = 16; o > 0; o /= 2) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) best[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = threadIdx.x < (int)(blockDim.x / 32) ? best[threadIdx.x] : 0;
    for (int o = 16; o > 0; o /= 2) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (threadIdx.x == 0) *out = m;
  }
}

// The grouped execution's input: xg[ng, j, p] = x[n, idx[ng, j], p] for j < cnt[ng], 0 for cnt[ng] <= j < K
// (ng = n·G + g; one (ng, j) plane of HW pixels per row of the grid's work)
__global__ void gatherPlanesKernel(const float* x, const int* idx, const int* cnt, int C, int G, int K, int64_t HW,
                                   int64_t total, float* xg) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t plane = i / HW, p = i - plane * HW;
    const int ng = (int)(plane / K), j = (int)(plane - (int64_t)ng * K);
    const int n = ng / G;
    xg[i] = j < cnt[ng] ? x[((int64_t)n * C + idx[(int64_t)ng * C + j]) * HW + p] : 0.f;
  }
}

// ... and its weights: wg[ng, o, j, t] = W[g·Og + o, c, t] · scale[ng, c] with c = idx[ng, j] for j < cnt[ng], else 0
__global__ void gatherWeightsKernel(const float* w, const float* scale, const int* idx, const int* cnt, int C, int G,
                                    int Og, int K, int T, int64_t total, float* wg) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / T;  // (ng, o, j)
    const int t = (int)(i - row * T);
    const int j = (int)(row % K);
    const int64_t ngo = row / K;
    const int o = (int)(ngo % Og), ng = (int)(ngo / Og), g = ng % G;
    float v = 0.f;
    if (j < cnt[ng]) {
      const int c = idx[(int64_t)ng * C + j];
      v = w[((int64_t)(g * Og + o) * C + c) * T + t] * scale[(int64_t)ng * C + c];
    }
    wg[i] = v;
  }
}

// after the grouped convolution: outputs that no row of outMask [N, Km, O] selects are 0, then the epilogue
__global__ void finishGroupedKernel(float* y, const float* outMask, int Km, int O, int64_t P, int64_t total, Epilogue e) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / P;  // n·O + o
    const int o = (int)(row % O);
    const int64_t n = row / O;
    float v = y[i];
    if (outMask) {
      bool kept = false;
      for (int k = 0; k < Km && !kept; k++) kept = outMask[(n * Km + k) * O + o] != 0.f;
      if (!kept) v = 0.f;
    }
    float mul, add;
    e.affine(o, mul, add);
    y[i] = e.finish(v * mul + add, i);
  }
}

template <int BM, int BK>
__global__ void __launch_bounds__(kTileThreads) msgcConvKernel(MsgcConvArgs a) {
  __shared__ float As[BK * MsgcTileThread<BM, BK>::AStride];
  __shared__ float Bs[BK * kTileBN];
  MsgcTileThread<BM, BK> t;
  t.init(a, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
  if (t.rBegin < t.rEnd) t.fetch(a, t.rBegin);
  for (int r0 = t.rBegin; r0 < t.rEnd; r0 += BK) {
    t.commit(As, Bs);
    __syncthreads();
    if (r0 + BK < t.rEnd) t.fetch(a, r0 + BK);  // the next stage's loads, in flight during compute
    t.compute(As, Bs);
    __syncthreads();
  }
  t.store(a);
}

__global__ void splitFinishKernel(MsgcConvArgs a, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    msgcSplitFinish(a, i);
}

int multiprocessors() {
  static const int n = [] {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess) v = 80;
    return v;
  }();
  return n;
}


// The grouped execution (MSGC_CUDA_GATHER=cudnn): each (sample, head)'s selected channels and the matching weight
// columns (times the scales) are gathered into dense operands padded to K = the batch's largest selection, rounded
// up to 8; one cuDNN convolution in N·G groups of K inputs and O/G outputs over a batch of one then writes y
// [N, O, OH, OW] in place (group n·G + g is sample n's head g). Its multiply-adds are N·O·K·k²·OH·OW: the density
// plus the padding to the largest selection. The price: reading K back to the host (a wait for the GPU), and
// per-sample copies of the weights (N·O·K·k² floats), which outweigh the convolution on small maps.
bool groupedWanted() {
  const char* e = std::getenv("MSGC_CUDA_GATHER");
  return e && std::strcmp(e, "cudnn") == 0 && haveCudnn();
}

void groupedForward(const MsgcConvArgs& a, const Shape& xs, const Shape& ws, const MsgcConvParams& p, int G,
                    const int* idx, const int* cnt, const Tensor* outMask, float* y) {
  const int64_t N = xs[0], C = xs[1], HW = xs[2] * xs[3], O = ws[0], Og = O / G, T = ws[2] * ws[3];
  const int64_t P = (int64_t)a.OH * a.OW;
  int* dmax = static_cast<int*>(allocDevice(sizeof(int)));
  maxCountKernel<<<1, 256>>>(cnt, (int)(N * G), dmax);
  int kmax = 0;
  try {
    MSGC_CUDA_LAUNCHED("msgcConv2d grouped: largest selection");
    copyDeviceToHost(&kmax, dmax, sizeof(int));
  } catch (...) {
    freeDevice(dmax, sizeof(int));
    throw;
  }
  freeDevice(dmax, sizeof(int));
  if (kmax == 0) {
    fill(y, N * O * P, 0.f);
  } else {
    const int64_t K = (kmax + 7) / 8 * 8;
    const size_t xgBytes = (size_t)(N * G * K * HW) * sizeof(float), wgBytes = (size_t)(N * O * K * T) * sizeof(float);
    float* xg = static_cast<float*>(allocDevice(xgBytes));
    float* wg = nullptr;
    try {
      wg = static_cast<float*>(allocDevice(wgBytes));
      gatherPlanesKernel<<<blocksFor(N * G * K * HW, 256), 256>>>(a.x, idx, cnt, (int)C, G, (int)K, HW, N * G * K * HW, xg);
      MSGC_CUDA_LAUNCHED("msgcConv2d grouped: input planes");
      gatherWeightsKernel<<<blocksFor(N * O * K * T, 256), 256>>>(a.w, a.scale, idx, cnt, (int)C, G, (int)Og, (int)K,
                                                                  (int)T, N * O * K * T, wg);
      MSGC_CUDA_LAUNCHED("msgcConv2d grouped: weights");
      Conv2dParams cp;
      cp.strideH = p.strideH;
      cp.strideW = p.strideW;
      cp.padH = p.padH;
      cp.padW = p.padW;
      cp.groups = N * G;
      convForwardRaw(xg, {1, N * G * K, xs[2], xs[3]}, wg, {N * O, K, ws[2], ws[3]}, cp, {1, N * O, a.OH, a.OW}, y);
    } catch (...) {
      freeDevice(xg, xgBytes);
      if (wg) freeDevice(wg, wgBytes);
      throw;
    }
    freeDevice(xg, xgBytes);  // (stream order: the convolution reads them before any reuse)
    freeDevice(wg, wgBytes);
  }
  if (outMask || a.e.any()) {
    finishGroupedKernel<<<blocksFor(N * O * P, 256), 256>>>(y, outMask ? outMask->data() : nullptr,
                                                           outMask ? (int)outMask->shape[1] : 0, (int)O, P, N * O * P, a.e);
    MSGC_CUDA_LAUNCHED("msgcConv2d grouped: epilogue");
  }
}

}  // namespace

TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                          bool gathered, const Tensor* outMask, const FusedBnAct* bn, TensorPtr* means) {
  ensureDevice();
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3], G = p.heads;
  const int64_t OH = (H + 2 * p.padH - KH) / p.strideH + 1, OW = (W + 2 * p.padW - KW) / p.strideW + 1;
  // the kernel indexes within a sample, a weight and an output plane in 32 bits
  MSGC_CHECK(C * H * W < (int64_t(1) << 31) && O * C * KH * KW < (int64_t(1) << 31) && OH * OW < (int64_t(1) << 31),
             "msgcConv2d (cuda): a sample or the weight has 2^31 or more elements; split the input");
  MSGC_CHECK(N * G <= 65535, "msgcConv2d (cuda): batch × heads = ", N * G, " exceeds 65535; split the batch");
  MSGC_CHECK(N * O * OH * OW < (int64_t(1) << 40), "msgcConv2d (cuda): the output is too large");
  MSGC_CHECK((O / G + 15) / 16 <= 65535, "msgcConv2d (cuda): too many output channels per head (", O / G, ")");
  TensorPtr y = emptyTensor({N, O, OH, OW}, Device::CUDA);
  if (N == 0) return y;
  MsgcConvArgs a;
  a.x = x.data();
  a.w = weight.data();
  a.scale = scale.data();
  a.idx = nullptr;
  a.cnt = nullptr;
  a.outMask = gathered && outMask ? outMask->data() : nullptr;
  a.outMaskRows = a.outMask ? (int)outMask->shape[1] : 0;
  a.y = y->data();
  setGeometry(a, x.shape, weight.shape, p);
  a.e = makeEpilogue(bn);
  const int64_t P = OH * OW;
  const int BM = msgcTileRows(a.Og), BN = kTileBN;
  const int64_t tiles = ((P + BN - 1) / BN) * ((a.Og + BM - 1) / BM) * N * G;
  a.splits = msgcSplits(tiles, C * KH * KW, N * G, multiprocessors());
  a.partial = nullptr;
  a.partialStride = N * O * P;

  // the compacted indices live in one scratch buffer: [N·G, C] indices then [N·G] counts
  void* scratch = nullptr;
  const size_t scratchBytes = gathered ? (size_t)(N * G) * (size_t)(C + 1) * sizeof(int) : 0;
  if (gathered) {
    scratch = allocDevice(scratchBytes);
    int* idx = static_cast<int*>(scratch);
    int* cnt = idx + N * G * C;
    const int warps = 8;
    compactKernel<<<(unsigned)((N * G + warps - 1) / warps), warps * 32>>>(a.scale, a.C, (int)(N * G), idx, cnt);
    a.idx = idx;
    a.cnt = cnt;
  }
  const size_t partialBytes = a.splits > 1 ? (size_t)a.splits * (size_t)a.partialStride * sizeof(float) : 0;
  try {
    if (gathered) MSGC_CUDA_LAUNCHED("msgcConv2d channel compaction");
    if (gathered && groupedWanted()) {
      groupedForward(a, x.shape, weight.shape, p, (int)G, a.idx, a.cnt, outMask, y->data());
    } else {
      if (partialBytes) a.partial = static_cast<float*>(allocDevice(partialBytes));
      dim3 grid((unsigned)((P + BN - 1) / BN), (unsigned)((a.Og + BM - 1) / BM), (unsigned)(N * G * a.splits));
      withTileConfig(BM, [&](auto cfg) {
        using Cfg = decltype(cfg);
        msgcConvKernel<Cfg::BM, Cfg::BK><<<grid, kTileThreads>>>(a);
      });
      MSGC_CUDA_LAUNCHED("msgcConv2d");
      if (a.partial) {
        splitFinishKernel<<<blocksFor(a.partialStride, 256), 256>>>(a, a.partialStride);
        MSGC_CUDA_LAUNCHED("msgcConv2d split-K sum");
        freeDevice(a.partial, partialBytes);  // (stream order: the kernels above read it before any reuse)
        a.partial = nullptr;
      }
    }
    if (means) {
      *means = emptyTensor({N, O, 1, 1}, Device::CUDA);
      channelMeans(y->data(), (*means)->data(), N * O, P);
    }
  } catch (...) {
    if (scratch) freeDevice(scratch, scratchBytes);
    if (a.partial) freeDevice(a.partial, partialBytes);
    throw;
  }
  if (scratch) freeDevice(scratch, scratchBytes);  // (stream order: the kernel above reads it before any reuse)
  return y;
}

}  // namespace cuda
}  // namespace msgc
