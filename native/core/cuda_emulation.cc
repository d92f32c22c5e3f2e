// cuda_emulation.cc: the GPU's MSGC kernel run on the host (see emulateMsgcConvForward in msgc/cuda.h). Each
// block's 256 threads run their steps from cuda/msgc_conv_tile.h in the order __syncthreads imposes: all loads of
// a stage, then all computes, then the next stage; then all stores. Shared memory is a per-block array. Only the
// warp-ballot channel compaction differs: the host compacts with compactChannels, sequentially.
#include <vector>

#include "../cuda/msgc_conv_tile.h"
#include "msgc/cuda.h"
#include "msgc/errors.h"
#include "msgc/ops.h"

namespace msgc {
namespace cuda {
namespace {

template <int BM>
void runBlocks(const MsgcConvArgs& a, int gx, int gy, int gz) {
  std::vector<MsgcTileThread<BM>> threads(kTileThreads);
  std::vector<float> As(kTileBK * MsgcTileThread<BM>::AStride), Bs(kTileBK * kTileBN);
  for (int bz = 0; bz < gz; bz++)
    for (int by = 0; by < gy; by++)
      for (int bx = 0; bx < gx; bx++) {
        for (int t = 0; t < kTileThreads; t++) threads[t].init(a, bx, by, bz, t);
        for (int r0 = threads[0].rBegin; r0 < threads[0].rEnd; r0 += kTileBK) {
          for (auto& t : threads) t.load(a, r0, As.data(), Bs.data());
          for (auto& t : threads) t.compute(As.data(), Bs.data());
        }
        for (auto& t : threads) t.store(a);
      }
}

const float* plain(const Tensor& t, std::vector<TensorPtr>& hold) {
  MSGC_CHECK(t.device() == Device::CPU, "the GPU kernel's emulation takes CPU tensors");
  if (t.isPlain()) return t.data();
  hold.push_back(toPlain(t));
  return hold.back()->data();
}

}  // namespace

TensorPtr emulateMsgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
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
  a.C = (int)C; a.H = (int)H; a.W = (int)W; a.O = (int)O; a.G = (int)G; a.Og = (int)(O / G);
  a.KH = (int)KH; a.KW = (int)KW; a.OH = (int)OH; a.OW = (int)OW;
  a.strideH = (int)p.strideH; a.strideW = (int)p.strideW; a.padH = (int)p.padH; a.padW = (int)p.padW;
  if (bn) {  // (as makeEpilogue in norm.cu; without running statistics: no BatchNorm, the rest applies)
    a.e.mean = bn->runningMean ? plain(*bn->runningMean, hold) : nullptr;
    a.e.var = bn->runningVar ? plain(*bn->runningVar, hold) : nullptr;
    a.e.gamma = bn->weight ? plain(*bn->weight, hold) : nullptr;
    a.e.beta = bn->bias ? plain(*bn->bias, hold) : nullptr;
    a.e.eps = bn->eps;
    a.e.act = bn->act;
    a.e.residual = bn->residual ? plain(*bn->residual, hold) : nullptr;
  }
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
  const int BM = msgcTileRows(a.Og);
  const int64_t P = OH * OW;
  const int gx = (int)((P + kTileBN - 1) / kTileBN), gy = (a.Og + BM - 1) / BM;
  // the GPU's split-K choice for an H200-sized GPU (132 multiprocessors) unless MSGC_CUDA_SPLITK forces one
  a.splits = msgcSplits((int64_t)gx * gy * N * G, C * KH * KW, N * G, 132);
  a.partialStride = N * O * P;
  std::vector<float> partial(a.splits > 1 ? (size_t)(a.splits * a.partialStride) : 0);
  a.partial = partial.empty() ? nullptr : partial.data();
  const int gz = (int)(N * G * a.splits);
  if (BM == 64) runBlocks<64>(a, gx, gy, gz);
  else if (BM == 32) runBlocks<32>(a, gx, gy, gz);
  else runBlocks<16>(a, gx, gy, gz);
  if (a.partial)
    for (int64_t i = 0; i < a.partialStride; i++) msgcSplitFinish(a, i);
  if (means) {
    *means = emptyTensor({N, O, 1, 1});
    for (int64_t r = 0; r < N * O; r++) {
      double s = 0;
      for (int64_t q = 0; q < P; q++) s += a.y[r * P + q];
      (*means)->data()[r] = (float)(s / (double)P);
    }
  }
  return y;
}

}  // namespace cuda
}  // namespace msgc
