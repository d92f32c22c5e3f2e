// cuda_emulation.cc: the GPU kernels' own code run on the host (MSGC_CUDA_EMULATE=1; see cuda::emulating() in
// msgc/cuda.h). The MSGC kernel's 256 threads per block run their steps from cuda/msgc_conv_tile.h in the order
// __syncthreads imposes (every thread's commit of a stage to shared memory, then every thread's fetch of the next
// stage into its registers and compute of this one; then every thread's store), with a per-block array as shared
// memory; the elementwise kernels' per-element bodies
// (cuda/elementwise_ops.h, cuda/epilogue.h) run element by element. What differs from the GPU: the channel
// compaction (a warp ballot there, compactChannels here), the warp-shuffle dot products (sequential sums here) and
// the split-K choice (for a GPU of 132 multiprocessors here, unless MSGC_CUDA_SPLITK forces one).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../cuda/elementwise_ops.h"
#include "../cuda/msgc_conv_direct.h"
#include "../cuda/msgc_conv_mma.h"
#include "../cuda/msgc_conv_tile.h"
#include "msgc/cuda.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
namespace cuda {

bool emulating() {
  const char* e = std::getenv("MSGC_CUDA_EMULATE");
  return e && e[0] == '1';
}

bool tf32Allowed() {
  const char* e = std::getenv("MSGC_CUDA_TF32");
  return e && e[0] == '1';
}

namespace emulated {
namespace {

template <int BM, int BK>
void runBlocks(const MsgcConvArgs& a, int gx, int gy, int gz) {
  std::vector<MsgcTileThread<BM, BK>> threads(kTileThreads);
  std::vector<float> As(BK * MsgcTileThread<BM, BK>::AStride), Bs(BK * kTileBN);
  for (int bz = 0; bz < gz; bz++)
    for (int by = 0; by < gy; by++)
      for (int bx = 0; bx < gx; bx++) {
        for (int t = 0; t < kTileThreads; t++) threads[t].init(a, bx, by, bz, t);
        const int rBegin = threads[0].rBegin, rEnd = threads[0].rEnd;
        if (rBegin < rEnd)
          for (auto& t : threads) t.fetch(a, rBegin);
        for (int r0 = rBegin; r0 < rEnd; r0 += BK) {
          for (auto& t : threads) t.commit(As.data(), Bs.data());
          // (barrier)
          if (r0 + BK < rEnd)
            for (auto& t : threads) t.fetch(a, r0 + BK);
          for (auto& t : threads) t.compute(As.data(), Bs.data());
          // (barrier)
        }
        for (auto& t : threads) t.store(a);
      }
}

// cvt.rna.tf32.f32: v rounded to TF32 (10 mantissa bits; to nearest, ties away from zero); NaN and ±inf as they are
float toTf32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}

// one warp's step of the tensor-core kernel (msgcMmaKernel's WMMA calls): acc[16][32] (rows wm·16.., pixels
// wn·32..) += A · B over the stage's 8 steps, with the same TF32 operands and the same three products (split) or one
template <class Cfg>
void mmaWarpStep(float* acc, const float* As, const float* Bs, int wm, int wn, bool split) {
  for (int i = 0; i < 16; i++)
    for (int j = 0; j < 32; j++) {
      float s = acc[i * 32 + j];
      float ab[kMmaBK], as[kMmaBK], bb[kMmaBK], bs[kMmaBK];
      for (int k = 0; k < kMmaBK; k++) {
        const float av = As[k * Cfg::AStride + wm * 16 + i], bv = Bs[k * Cfg::BStride + wn * 32 + j];
        ab[k] = toTf32(av);
        as[k] = toTf32(av - ab[k]);
        bb[k] = toTf32(bv);
        bs[k] = toTf32(bv - bb[k]);
      }
      if (split) {
        for (int k = 0; k < kMmaBK; k++) s = std::fma(as[k], bb[k], s);
        for (int k = 0; k < kMmaBK; k++) s = std::fma(ab[k], bs[k], s);
      }
      for (int k = 0; k < kMmaBK; k++) s = std::fma(ab[k], bb[k], s);
      acc[i * 32 + j] = s;
    }
}

// the tensor-core kernel's blocks: every thread's steps in barrier order, each warp's products by mmaWarpStep
template <class Cfg>
void runMmaBlocks(const MsgcConvArgs& a, int gx, int gy, int gz, bool split) {
  std::vector<MsgcMmaThread<Cfg>> threads(Cfg::NT);
  std::vector<float> smem(Cfg::SmemFloats), acc((size_t)Cfg::Warps * 16 * 32);
  float* As = smem.data();
  float* Bs = As + Cfg::AFloats;
  for (int bz = 0; bz < gz; bz++)
    for (int by = 0; by < gy; by++)
      for (int bx = 0; bx < gx; bx++) {
        for (int t = 0; t < Cfg::NT; t++) threads[t].init(a, bx, by, bz, t);
        std::fill(acc.begin(), acc.end(), 0.f);
        const int sBegin = threads[0].sBegin, sEnd = threads[0].sEnd;
        if (sBegin < sEnd)
          for (auto& t : threads) t.fetch(a, sBegin);
        for (int st = sBegin; st < sEnd; st++) {
          for (auto& t : threads) t.commit(As, Bs);
          // (barrier)
          if (st + 1 < sEnd)
            for (auto& t : threads) t.fetch(a, st + 1);
          for (int w = 0; w < Cfg::Warps; w++)
            mmaWarpStep<Cfg>(acc.data() + w * 16 * 32, As, Bs, w % Cfg::WarpsM, w / Cfg::WarpsM, split);
          // (barrier)
        }
        float* Cs = smem.data();
        for (int w = 0; w < Cfg::Warps; w++)
          for (int i = 0; i < 16; i++)
            for (int j = 0; j < 32; j++)
              Cs[((w % Cfg::WarpsM) * 16 + i) * Cfg::CStride + (w / Cfg::WarpsM) * 32 + j] = acc[(w * 16 + i) * 32 + j];
        // (barrier)
        for (auto& t : threads) t.store(a, Cs);
      }
}

// One m16n8k8 product of a warp as PTX lays its fragments out (lane = 4·g + t; msgc_conv_direct.h): c[lane] +=
// A · B, A rebuilt from the lanes' a[lane][0..3], B from b[lane][0..1], the sums in float32.
void mmaWarp(float (*c)[4], const float (*a)[4], const float (*b)[2]) {
  float A[16][8], B[8][8];
  for (int l = 0; l < 32; l++) {
    const int g = l / 4, t = l % 4;
    A[g][t] = a[l][0];
    A[g + 8][t] = a[l][1];
    A[g][t + 4] = a[l][2];
    A[g + 8][t + 4] = a[l][3];
    B[t][g] = b[l][0];
    B[t + 4][g] = b[l][1];
  }
  for (int l = 0; l < 32; l++)
    for (int q = 0; q < 4; q++) {
      const int r = l / 4 + (q >> 1) * 8, col = (l % 4) * 2 + (q & 1);
      float s = c[l][q];
      for (int k = 0; k < 8; k++) s = std::fma(A[r][k], B[k][col], s);
      c[l][q] = s;
    }
}

// the direct kernel's blocks (msgcDirectKernel): the threads' copies of a stage (plain copies here), then each
// warp's products per kernel offset from the lanes' fragments (the same TF32 splitting and the same three
// products, or one), then the products through shared memory to the threads' stores
template <class Cfg>
void runDirectBlocks(const MsgcConvArgs& a, const DirectGeom& d, int gx, int gy, int gz, bool split) {
  constexpr int MT = Cfg::MT, Warps = Cfg::NT / 32;
  std::vector<MsgcDirectThread<Cfg>> threads(Cfg::NT);
  std::vector<typename MsgcDirectThread<Cfg>::LaneStage> ls(Cfg::NT);  // (each lane's, once per stage)
  std::vector<float> smem(d.smemFloats);
  std::vector<float> acc((size_t)Cfg::NT * MT * 4 * 4);  // [thread][mt][nt][q]
  auto at = [&](int t, int mt, int nt) { return acc.data() + (((size_t)t * MT + mt) * 4 + nt) * 4; };
  const auto copy = [](float* dst, const float* src, bool ok) { *dst = ok ? *src : 0.f; };
  float aBig[32][4], aSmall[32][4], bBig[32][2], bSmall[32][2], c[32][4];
  for (int bz = 0; bz < gz; bz++)
    for (int by = 0; by < gy; by++)
      for (int bx = 0; bx < gx; bx++) {
        for (int t = 0; t < Cfg::NT; t++) threads[t].init(a, d, bx, by, bz, t);
        std::fill(acc.begin(), acc.end(), 0.f);
        const int sBegin = threads[0].sBegin, sEnd = threads[0].sEnd;
        if (sBegin < sEnd)
          for (auto& t : threads) t.issue(a, d, sBegin, smem.data(), copy);
        for (int st = sBegin; st < sEnd; st++) {
          const float* buf = smem.data() + ((st - sBegin) & 1) * d.bufFloats;
          if (st + 1 < sEnd)
            for (auto& t : threads) t.issue(a, d, st + 1, smem.data() + ((st + 1 - sBegin) & 1) * d.bufFloats, copy);
          // (wait for this stage's copies; barrier)
          for (int t = 0; t < Cfg::NT; t++) ls[t] = threads[t].stage(d, buf);
          for (int w = 0; w < Warps; w++)
            for (int kr = 0; kr < a.KH; kr++)
              for (int ks = 0; ks < a.KW; ks++)
                for (int mt = 0; mt < MT; mt++)
                  for (int nt = 0; nt < 4; nt++) {
                    for (int l = 0; l < 32; l++) {
                      const auto& t = threads[w * 32 + l];
                      float va[4], vb[2];
                      t.fragA(ls[w * 32 + l], kr * a.KW + ks, mt, va);
                      t.fragB(ls[w * 32 + l], kr * d.cols + ks, nt, vb);
                      for (int i = 0; i < 4; i++) {
                        aBig[l][i] = toTf32(va[i]);
                        aSmall[l][i] = toTf32(va[i] - aBig[l][i]);
                      }
                      for (int i = 0; i < 2; i++) {
                        bBig[l][i] = toTf32(vb[i]);
                        bSmall[l][i] = toTf32(vb[i] - bBig[l][i]);
                      }
                      std::memcpy(c[l], at(w * 32 + l, mt, nt), sizeof c[l]);
                    }
                    if (split) {
                      mmaWarp(c, aSmall, bBig);
                      mmaWarp(c, aBig, bSmall);
                    }
                    mmaWarp(c, aBig, bBig);
                    for (int l = 0; l < 32; l++) std::memcpy(at(w * 32 + l, mt, nt), c[l], sizeof c[l]);
                  }
          // (barrier)
        }
        float* Cs = smem.data();
        for (int t = 0; t < Cfg::NT; t++)
          for (int mt = 0; mt < MT; mt++)
            for (int nt = 0; nt < 4; nt++)
              for (int q = 0; q < 4; q++) {
                int m, n;
                accPosition<Cfg>(threads[t].wm, threads[t].wn, threads[t].lane, mt, nt, q, m, n);
                Cs[m * Cfg::CStride + n] = at(t, mt, nt)[q];
              }
        // (barrier)
        for (auto& t : threads) t.store(a, Cs);
      }
}

// plain data of a CPU tensor (a plain copy is kept alive in `hold` for blocked layouts)
const float* plain(const Tensor& t, std::vector<TensorPtr>& hold) {
  MSGC_CHECK(t.device() == Device::CPU, "the GPU kernels' emulation takes CPU tensors");
  if (t.isPlain()) return t.data();
  hold.push_back(toPlain(t));
  return hold.back()->data();
}

Epilogue hostEpilogue(const FusedBnAct* bn, std::vector<TensorPtr>& hold) {  // (as makeEpilogue in norm.cu)
  Epilogue e;
  if (!bn) return e;
  e.mean = bn->runningMean ? plain(*bn->runningMean, hold) : nullptr;
  e.var = bn->runningVar ? plain(*bn->runningVar, hold) : nullptr;
  e.gamma = bn->weight ? plain(*bn->weight, hold) : nullptr;
  e.beta = bn->bias ? plain(*bn->bias, hold) : nullptr;
  e.eps = bn->eps;
  e.act = bn->act;
  e.residual = bn->residual ? plain(*bn->residual, hold) : nullptr;
  return e;
}

TensorPtr rowMeans(const float* y, int64_t N, int64_t C, int64_t P) {
  TensorPtr m = emptyTensor({N, C, 1, 1});
  for (int64_t r = 0; r < N * C; r++) {
    double s = 0;
    for (int64_t q = 0; q < P; q++) s += y[r * P + q];
    m->data()[r] = (float)(s / (double)P);
  }
  return m;
}

// out[r, k] = e(Σ_j in[r, j] · w[k, j] (+ bias[k])) (a warp's shuffle-reduced dot product on the GPU)
void rowDot(const float* in, const float* w, const float* bias, float* out, int64_t rows, int64_t K, int64_t J,
            const RowDotEpilogue& e = RowDotEpilogue()) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < K; k++) {
      float s = 0.f;
      for (int64_t j = 0; j < J; j++) s = std::fma(in[r * J + j], w[k * J + j], s);
      out[r * K + k] = e.apply(s + (bias ? bias[k] : 0.f), (int)k);
    }
}

}  // namespace

TensorPtr batchNormActEval(const Tensor& x, const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                           const Tensor* bias, float eps, int act, const Tensor* residual, TensorPtr* means) {
  std::vector<TensorPtr> hold;
  const int64_t N = x.shape[0], C = x.shape[1];
  const int64_t P = N * C > 0 ? x.numel() / (N * C) : 0;
  const FusedBnAct bn = fusedBnAct(runningMean, runningVar, weight, bias, eps, act, residual);
  const Epilogue e = hostEpilogue(&bn, hold);
  const float* xd = plain(x, hold);
  TensorPtr y = emptyTensor(x.shape);
  float* yd = y->data();
  for (int64_t i = 0; i < x.numel(); i++) {  // (bnActKernel's body)
    float mul, add;
    e.affine((int)((i / P) % C), mul, add);
    yd[i] = e.finish(xd[i] * mul + add, i);
  }
  if (means) *means = rowMeans(yd, N, C, P);
  return y;
}

TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                          bool gathered, const Tensor* outMask, const FusedBnAct* bn, TensorPtr* means) {
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3], G = p.heads;
  const int64_t OH = (H + 2 * p.padH - KH) / p.strideH + 1, OW = (W + 2 * p.padW - KW) / p.strideW + 1;
  std::vector<TensorPtr> hold;
  TensorPtr y = emptyTensor({N, O, OH, OW});
  MsgcConvArgs a;
  a.x = plain(x, hold);
  a.w = plain(weight, hold);
  a.scale = plain(scale, hold);
  a.outMask = gathered && outMask ? plain(*outMask, hold) : nullptr;
  a.outMaskRows = a.outMask ? (int)outMask->shape[1] : 0;
  a.y = y->data();
  setGeometry(a, x.shape, weight.shape, p);
  a.e = hostEpilogue(bn, hold);
  std::vector<int> idx, cnt;
  a.idx = nullptr;
  a.cnt = nullptr;
  if (gathered) {
    idx.resize((size_t)(N * G * C));
    cnt.resize((size_t)(N * G));
    for (int64_t ng = 0; ng < N * G; ng++) cnt[ng] = compactChannels(a.scale + ng * C, (int)C, idx.data() + ng * C);
    a.idx = idx.data();
    a.cnt = cnt.data();
  }
  const int64_t P = OH * OW;
  const MsgcKernel kernel = msgcKernel(true, a);  // (the emulated GPU has tensor cores)
  const int BM = msgcTileRows(a.Og), BN = kernel.BN;
  const int gx = (int)((P + BN - 1) / BN), gy = (a.Og + BM - 1) / BM;
  a.splits = msgcSplits((int64_t)gx * gy * N * G, kernel.reduction(C, KH * KW), N * G > 0 ? N * G : 1, 132);
  a.partialStride = N * O * P;
  std::vector<float> partial(a.splits > 1 ? (size_t)(a.splits * a.partialStride) : 0);
  a.partial = partial.empty() ? nullptr : partial.data();
  const int gz = (int)(N * G * a.splits);
  if (kernel.kind == MsgcKernel::Direct) {
    withDirectConfig(BM, BN, [&](auto cfg) {
      using Cfg = decltype(cfg);
      const DirectGeom d = directGeom<Cfg>(a.W, a.KH, a.KW, a.OH, a.OW, a.strideH, a.padW);
      runDirectBlocks<Cfg>(a, d, gx, gy, gz, !tf32Allowed());
    });
  } else if (kernel.kind == MsgcKernel::Mma) {
    withMmaConfig(BM, BN, [&](auto cfg) { runMmaBlocks<decltype(cfg)>(a, gx, gy, gz, !tf32Allowed()); });
  } else {
    withTileConfig(BM, [&](auto cfg) {
      using Cfg = decltype(cfg);
      runBlocks<Cfg::BM, Cfg::BK>(a, gx, gy, gz);
    });
  }
  if (a.partial)
    for (int64_t i = 0; i < a.partialStride; i++) msgcSplitFinish(a, i);
  if (means) *means = rowMeans(a.y, N, O, P);
  return y;
}

TensorPtr activationForward(Activation act, const Tensor& x) {
  std::vector<TensorPtr> hold;
  const float* xd = plain(x, hold);
  TensorPtr y = emptyTensor(x.shape);
  for (int64_t i = 0; i < x.numel(); i++) y->data()[i] = activationAt(xd[i], (int)act);
  return y;
}

TensorPtr binaryForward(Binary op, const Tensor& a, const Tensor& b) {
  std::vector<TensorPtr> hold;
  const float* ad = plain(a, hold);
  const float* bd = plain(b, hold);
  MSGC_CHECK(a.dim() <= 8, "binary (cuda): at most 8 dims");
  const BroadcastShape s = broadcastShape(a.shape, b.shape);
  TensorPtr y = emptyTensor(a.shape);
  for (int64_t i = 0; i < a.numel(); i++) y->data()[i] = binaryAt(ad[i], bd[broadcastIndex(s, i)], (int)op);
  return y;
}

TensorPtr pool2dForward(PoolKind kind, const Tensor& x, const Pool2dParams& p) {
  std::vector<TensorPtr> hold;
  const float* xd = plain(x, hold);
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t OH = (H + 2 * p.padH - p.kernelH) / p.strideH + 1, OW = (W + 2 * p.padW - p.kernelW) / p.strideW + 1;
  TensorPtr y = emptyTensor({N, C, OH, OW});
  for (int64_t i = 0; i < y->numel(); i++)
    y->data()[i] = poolAt(xd, i, (int)H, (int)W, (int)OH, (int)OW, p, kind == PoolKind::Max);
  return y;
}

TensorPtr linearForward(const Tensor& x, const Tensor& weight, const Tensor* bias) {
  std::vector<TensorPtr> hold;
  const int64_t N = x.shape[0], J = x.shape[1], K = weight.shape[0];
  TensorPtr y = emptyTensor({N, K});
  rowDot(plain(x, hold), plain(weight, hold), bias ? plain(*bias, hold) : nullptr, y->data(), N, K, J);
  return y;
}

TensorPtr squeezeHeadEval(const Tensor& ctx, const Tensor& w1, const Tensor& mean, const Tensor& var, const Tensor* gamma,
                          const Tensor* beta, float eps, const Tensor& w2, const Tensor& b2, bool threshold) {
  std::vector<TensorPtr> hold;
  const int64_t N = ctx.shape[0], Cc = ctx.shape[1], B = w1.shape[0], K = w2.shape[0];
  std::vector<float> h((size_t)(N * B));
  rowDot(plain(ctx, hold), plain(w1, hold), nullptr, h.data(), N, B, Cc,
         headEpilogue(plain(mean, hold), plain(var, hold), gamma ? plain(*gamma, hold) : nullptr,
                      beta ? plain(*beta, hold) : nullptr, eps));
  TensorPtr z = emptyTensor({N, K});
  RowDotEpilogue gate;
  if (threshold) gate.kind = RowDotEpilogue::kThreshold;
  rowDot(h.data(), plain(w2, hold), plain(b2, hold), z->data(), N, K, B, gate);
  return z;
}

TensorPtr gateEval(const Tensor& logits) {
  std::vector<TensorPtr> hold;
  const float* l = plain(logits, hold);
  TensorPtr m = emptyTensor(logits.shape);
  for (int64_t i = 0; i < logits.numel(); i++) m->data()[i] = thresholdAt(l[i]);
  return m;
}

}  // namespace emulated
}  // namespace cuda
}  // namespace msgc
