// msgc_conv.cu: the MSGC convolution on the GPU, masked and gathered, by three kernels of ours, one contract (a
// block: 16-64 output channels of one head × a tile of one sample's output pixels; MsgcConvArgs):
//   direct (msgc_conv_direct.h): tensor cores, the input patch staged once per 8 channels, mma.sync per kernel
//          offset; k × k convs (k > 1) on compute capability 8.0+;
//   WMMA   (msgc_conv_mma.h): tensor cores, an implicit GEMM of 8 channels at one offset per stage; 1×1 convs on
//          8.0+, and k × k ones whose direct stages would not fit in shared memory;
//   tile   (msgc_conv_tile.h): float32 FMAs, 64 pixels per block; GPUs before 8.0.
// (msgcKernel in msgc_conv_direct.h chooses; MSGC_CUDA_KERNEL forces one.) The tensor-core kernels keep float32
// accuracy by 3xTF32, or do one TF32 product where MSGC_CUDA_TF32=1 allows it. Gathered: a first kernel compacts,
// per (sample, head), the indices of the channels with a non-zero scale on the GPU (no host round trip, so no
// synchronisation); each block's reduction then runs over those channels only. Masked: over every channel, times
// the scale (the reference's arithmetic). Masked, with MSGC_CUDA_MASKED=cudnn: cuDNN's grouped convolution over the
// G scaled copies of x (maskedByCudnn below), the dense multiply-adds at cuDNN's speed (on an H200, 2026-12-04: no
// faster than the FMA kernel gathered in whole models at batch 32, 0.39-0.47x dense against 0.40-0.52; the direct
// kernel is about 1.4x faster again; so opt-in).
// (Measured and removed, 2026-12-04 on an H200: the selections gathered into dense operands padded to the batch's
// largest, then one cuDNN convolution in N·G groups over a batch of one. cuDNN runs so many groups 2-6x slower than
// the FMA kernel: ResNet-18's 64→64 at 56², batch 32, density 0.5, 539 µs against 276.)
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "epilogue.h"
#include "msgc/cuda.h"
#include "msgc_conv_direct.h"
#include "msgc_conv_mma.h"
#include "msgc_conv_tile.h"

#include <mma.h>

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

// xs[n, i·C + c, p] = x[n, c, p] · scale[n, i, c]: the G scaled copies of x, side by side ([N, G·C, H, W])
__global__ void scaledCopiesKernel(const float* x, const float* scale, int C, int G, int64_t HW, int64_t total, float* xs) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t plane = e / HW;  // n·G·C + i·C + c
    const int64_t c = plane % C, ni = plane / C, n = ni / G;
    xs[e] = x[(n * C + c) * HW + (e - plane * HW)] * scale[plane];
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

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // (TF32 WMMA: compute capability 8.0+, and the host pass)
// a TF32 operand fragment in place: big = its values rounded to TF32; with Split, small = the TF32 remainders
template <bool Split, class Frag>
__device__ __forceinline__ void splitTf32(Frag& big, Frag& small) {
  MSGC_UNROLL
  for (int i = 0; i < big.num_elements; i++) {
    const float v = big.x[i];
    big.x[i] = nvcuda::wmma::__float_to_tf32(v);
    if (Split) small.x[i] = nvcuda::wmma::__float_to_tf32(v - big.x[i]);
  }
}
#endif

// The tensor-core kernel (msgc_conv_mma.h): per stage, every thread's loads to shared memory, then each warp's
// 16 × 32 piece of the block's products by WMMA (3 TF32 products a step when Split: float32 accuracy; 1 with
// TF32 allowed), the next stage's global loads in flight meanwhile; at the end the products go through shared
// memory to the threads' epilogue and stores. Launched only on GPUs of compute capability 8.0+.
template <class Cfg, bool Split>
__global__ void __launch_bounds__(Cfg::NT) msgcMmaKernel(MsgcConvArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ __align__(128) float smem[Cfg::SmemFloats];
  float* As = smem;
  float* Bs = smem + Cfg::AFloats;
  MsgcMmaThread<Cfg> t;
  t.init(a, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
  const int warp = threadIdx.x / 32, wm = warp % Cfg::WarpsM, wn = warp / Cfg::WarpsM;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  if (t.sBegin < t.sEnd) t.fetch(a, t.sBegin);
  for (int st = t.sBegin; st < t.sEnd; st++) {
    t.commit(As, Bs);
    __syncthreads();
    if (st + 1 < t.sEnd) t.fetch(a, st + 1);
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> aBig, aSmall;
    wmma::load_matrix_sync(aBig, As + wm * 16, Cfg::AStride);
    splitTf32<Split>(aBig, aSmall);
    MSGC_UNROLL
    for (int f = 0; f < 2; f++) {
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bBig, bSmall;
      wmma::load_matrix_sync(bBig, Bs + wn * 32 + f * 16, Cfg::BStride);
      splitTf32<Split>(bBig, bSmall);
      if (Split) {
        wmma::mma_sync(acc[f], aSmall, bBig, acc[f]);
        wmma::mma_sync(acc[f], aBig, bSmall, acc[f]);
      }
      wmma::mma_sync(acc[f], aBig, bBig, acc[f]);
    }
    __syncthreads();
  }
  float* Cs = smem;  // (every warp is past its last read of As and Bs)
  MSGC_UNROLL
  for (int f = 0; f < 2; f++)
    wmma::store_matrix_sync(Cs + wm * 16 * Cfg::CStride + wn * 32 + f * 16, acc[f], Cfg::CStride, wmma::mem_row_major);
  __syncthreads();
  t.store(a, Cs);
#endif
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // (mma.sync TF32 and cp.async: compute capability 8.0+)
__device__ __forceinline__ uint32_t tf32Bits(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
}

// c += a · b, one m16n8k8 TF32 product of a warp (fragments as in msgc_conv_direct.h)
__device__ __forceinline__ void mmaTf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// *dst (shared) = ok ? *src (global) : 0, asynchronously (cp.async, 4 bytes, a zero source size fills zeros)
__device__ __forceinline__ void cpAsync4(float* dst, const float* src, bool ok) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(ok ? 4 : 0));
}
#endif

// The direct tensor-core kernel (msgc_conv_direct.h): stages of 8 channels copied asynchronously into two
// shared-memory buffers (the next stage's copies in flight during this stage's products), each warp's products
// by mma.sync per kernel offset, then through shared memory to the threads' epilogue and stores. Launched only on
// GPUs of compute capability 8.0+, with dynamic shared memory d.smemFloats floats.
template <class Cfg, bool Split>
__global__ void __launch_bounds__(Cfg::NT) msgcDirectKernel(MsgcConvArgs a, DirectGeom d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(16) float dsmem[];
  constexpr int MT = Cfg::MT;
  MsgcDirectThread<Cfg> t;
  t.init(a, d, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
  float acc[MT][4][4];
  MSGC_UNROLL
  for (int mt = 0; mt < MT; mt++)
    MSGC_UNROLL
    for (int nt = 0; nt < 4; nt++)
      MSGC_UNROLL
      for (int q = 0; q < 4; q++) acc[mt][nt][q] = 0.f;
  auto copy = [](float* dst, const float* src, bool ok) { cpAsync4(dst, src, ok); };
  if (t.sBegin < t.sEnd) t.issue(a, d, t.sBegin, dsmem, copy);
  asm volatile("cp.async.commit_group;\n" ::);
  for (int st = t.sBegin; st < t.sEnd; st++) {
    const float* buf = dsmem + (a.probe == 2 ? 0 : ((st - t.sBegin) & 1) * d.bufFloats);
    if (st + 1 < t.sEnd && a.probe != 2) t.issue(a, d, st + 1, dsmem + ((st + 1 - t.sBegin) & 1) * d.bufFloats, copy);
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 1;\n" ::);  // (all but the newest group: this stage's copies)
    __syncthreads();
    const auto ls = t.stage(d, buf);
    for (int kr = 0; kr < (a.probe == 1 ? 0 : a.KH); kr++)
      for (int ks = 0; ks < a.KW; ks++) {
        const int tap = kr * a.KW + ks, tapOff = kr * d.cols + ks;
        uint32_t aBig[MT][4], aSmall[MT][4];
        MSGC_UNROLL
        for (int mt = 0; mt < MT; mt++) {
          float v[4];
          t.fragA(ls, tap, mt, v);
          MSGC_UNROLL
          for (int i = 0; i < 4; i++) {
            aBig[mt][i] = tf32Bits(v[i]);
            if (Split) aSmall[mt][i] = tf32Bits(v[i] - __uint_as_float(aBig[mt][i]));
          }
        }
        MSGC_UNROLL
        for (int nt = 0; nt < 4; nt++) {
          float v[2];
          t.fragB(ls, tapOff, nt, v);
          uint32_t bBig[2], bSmall[2];
          MSGC_UNROLL
          for (int i = 0; i < 2; i++) {
            bBig[i] = tf32Bits(v[i]);
            if (Split) bSmall[i] = tf32Bits(v[i] - __uint_as_float(bBig[i]));
          }
          MSGC_UNROLL
          for (int mt = 0; mt < MT; mt++) {
            if (Split) {
              mmaTf32(acc[mt][nt], aSmall[mt], bBig);
              mmaTf32(acc[mt][nt], aBig[mt], bSmall);
            }
            mmaTf32(acc[mt][nt], aBig[mt], bBig);
          }
        }
      }
    __syncthreads();
  }
  float* Cs = dsmem;  // (every copy has landed and every warp is past its last read of the buffers)
  MSGC_UNROLL
  for (int mt = 0; mt < MT; mt++)
    MSGC_UNROLL
    for (int nt = 0; nt < 4; nt++)
      MSGC_UNROLL
      for (int q = 0; q < 4; q++) {
        int m, n;
        accPosition<Cfg>(t.wm, t.wn, t.lane, mt, nt, q, m, n);
        Cs[m * Cfg::CStride + n] = acc[mt][nt][q];
      }
  __syncthreads();
  t.store(a, Cs);
#endif
}

// launches the direct kernel for tile Cfg (its dynamic shared memory allowed up to kDirectMaxSmemBytes, once)
template <class Cfg, bool Split>
void launchDirect(const MsgcConvArgs& a, const DirectGeom& d, dim3 grid) {
  static const bool attributeSet = [] {
    MSGC_CUDA_CHECK(cudaFuncSetAttribute(msgcDirectKernel<Cfg, Split>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         kDirectMaxSmemBytes));
    return true;
  }();
  (void)attributeSet;
  msgcDirectKernel<Cfg, Split><<<grid, Cfg::NT, (size_t)d.smemFloats * sizeof(float)>>>(a, d);
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

// whether the GPU has TF32 tensor cores (compute capability 8.0+)
bool tensorCores() {
  static const bool yes = [] {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) major = 0;
    return major >= 8;
  }();
  return yes;
}

// The masked execution through cuDNN (MSGC_CUDA_MASKED=cudnn, read per call): head i convolves x ⊙ scale[:, i, :]
// with its own O/G filters, so all heads together are one convolution in G groups over the G scaled copies of x
// ([N, G·C, H, W]), whose grouped weight [G][O/G][C][k][k] is the weight itself. The dense multiply-adds (and G
// copies of x), at cuDNN's speed. Measured (H200, 2026-12-04, batch 32, density 0.5): 1.22x the FMA kernel's
// gathered speed on ResNet-18's layers, nothing gained in whole models; the direct kernel is faster. Off by default.
bool cudnnMaskedWanted() {
#ifdef MSGC_WITH_CUDNN
  const char* e = std::getenv("MSGC_CUDA_MASKED");
  return e && std::strcmp(e, "cudnn") == 0;
#else
  return false;
#endif
}

TensorPtr maskedByCudnn(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                        const FusedBnAct* bn, TensorPtr* means) {
  const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], G = p.heads;
  TensorPtr xs = emptyTensor({N, G * C, x.shape[2], x.shape[3]}, Device::CUDA);
  const int64_t total = N * G * C * HW;
  scaledCopiesKernel<<<blocksFor(total, 256), 256>>>(x.data(), scale.data(), (int)C, (int)G, HW, total, xs->data());
  MSGC_CUDA_LAUNCHED("msgcConv2d (cuDNN, masked): scaled copies");
  Conv2dParams cp = convParams(p);
  cp.groups = G;
  TensorPtr y = ::msgc::cuda::conv2dForward(*xs, weight, nullptr, cp);
  xs.reset();  // (stream order: the convolution reads it before any reuse)
  const int64_t O = y->shape[1], P = y->shape[2] * y->shape[3];
  const Epilogue e = makeEpilogue(bn);
  if (e.any()) applyEpilogue(y->data(), y->data(), N, O, P, e);
  if (means) {
    *means = emptyTensor({N, O, 1, 1}, Device::CUDA);
    channelMeans(y->data(), (*means)->data(), N * O, P);
  }
  return y;
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
  if (N > 0 && !gathered && cudnnMaskedWanted()) return maskedByCudnn(x, weight, scale, p, bn, means);
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
  const char* probe = std::getenv("MSGC_CUDA_PROBE");
  a.probe = probe ? std::atoi(probe) : 0;
  const int64_t P = OH * OW;
  const MsgcKernel kernel = msgcKernel(tensorCores(), a);
  const int BM = msgcTileRows(a.Og), BN = kernel.BN;
  const int64_t tiles = ((P + BN - 1) / BN) * ((a.Og + BM - 1) / BM) * N * G;
  a.splits = msgcSplits(tiles, kernel.reduction(C, KH * KW), N * G, multiprocessors());
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
    if (partialBytes) a.partial = static_cast<float*>(allocDevice(partialBytes));
    dim3 grid((unsigned)((P + BN - 1) / BN), (unsigned)((a.Og + BM - 1) / BM), (unsigned)(N * G * a.splits));
    const bool split3 = !tf32Allowed();
    if (kernel.kind == MsgcKernel::Direct) {
      withDirectConfig(BM, BN, [&](auto cfg) {
        using Cfg = decltype(cfg);
        const DirectGeom d = directGeom<Cfg>(a.W, a.KH, a.KW, a.OH, a.OW, a.strideH, a.padW);
        if (split3) launchDirect<Cfg, true>(a, d, grid);
        else launchDirect<Cfg, false>(a, d, grid);
      });
    } else if (kernel.kind == MsgcKernel::Mma && !split3) {
      withMmaConfig(BM, BN, [&](auto cfg) { msgcMmaKernel<decltype(cfg), false><<<grid, decltype(cfg)::NT>>>(a); });
    } else if (kernel.kind == MsgcKernel::Mma) {
      withMmaConfig(BM, BN, [&](auto cfg) { msgcMmaKernel<decltype(cfg), true><<<grid, decltype(cfg)::NT>>>(a); });
    } else {
      withTileConfig(BM, [&](auto cfg) {
        using Cfg = decltype(cfg);
        msgcConvKernel<Cfg::BM, Cfg::BK><<<grid, kTileThreads>>>(a);
      });
    }
    MSGC_CUDA_LAUNCHED("msgcConv2d");
    if (a.partial) {
      splitFinishKernel<<<blocksFor(a.partialStride, 256), 256>>>(a, a.partialStride);
      MSGC_CUDA_LAUNCHED("msgcConv2d split-K sum");
      freeDevice(a.partial, partialBytes);  // (stream order: the kernels above read it before any reuse)
      a.partial = nullptr;
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
