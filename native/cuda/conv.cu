// conv.cu: dense and grouped convolution forward on the GPU through cuDNN (the dense baselines of the MSGC layers,
// and the dense layers of a model). Strict float32: the descriptors ask for FMA math, so no TF32 tensor cores
// round the inputs to 10-bit mantissas behind the user's back (PyTorch's allow_tf32 = False); the same numerics
// as the CPU backend. MSGC_CUDA_TF32=1 (read per call) allows TF32 tensor cores instead (PyTorch's default for
// cuDNN convs), for benchmarks against the fastest dense baseline. The algorithm is the fastest cudnnFind reports
// for the shape and math, found once and cached.
#include "common.h"
#include "epilogue.h"
#include "msgc/cuda.h"

#ifdef MSGC_WITH_CUDNN
#include <cudnn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <tuple>

#define MSGC_CUDNN_CHECK(expr)                                                                      \
  do {                                                                                              \
    cudnnStatus_t s_ = (expr);                                                                      \
    if (s_ != CUDNN_STATUS_SUCCESS) ::msgc::fail("cudnn: ", #expr, " failed: ", cudnnGetErrorString(s_)); \
  } while (0)

namespace msgc {
namespace cuda {
namespace {

cudnnHandle_t handle() {
  static cudnnHandle_t h = [] {
    ensureDevice();
    cudnnHandle_t hh = nullptr;
    MSGC_CUDNN_CHECK(cudnnCreate(&hh));
    return hh;
  }();
  return h;
}

// descriptors and the chosen algorithm for one shape (kept for the process's lifetime, as cuDNN's own caches)
struct ConvPlan {
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  size_t workspace = 0;
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (xd) cudnnDestroyTensorDescriptor(xd);
    if (yd) cudnnDestroyTensorDescriptor(yd);
    if (wd) cudnnDestroyFilterDescriptor(wd);
    if (cd) cudnnDestroyConvolutionDescriptor(cd);
  }
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t>;

ConvPlan& plan(const Tensor& x, const Tensor& w, const Conv2dParams& p, const Shape& ys) {
  static std::map<PlanKey, std::unique_ptr<ConvPlan>> plans;
  const bool allowTf32 = tf32Allowed();
  PlanKey key{x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[2], w.shape[3], p.strideH,
              p.strideW, p.padH, p.padW, p.dilationH * 65536 + p.dilationW, p.groups, allowTf32 ? 1 : 0};
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;
  auto pl = std::make_unique<ConvPlan>();
  MSGC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->xd));
  MSGC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->yd));
  MSGC_CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl->wd));
  MSGC_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&pl->cd));
  MSGC_CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)x.shape[0],
                                              (int)x.shape[1], (int)x.shape[2], (int)x.shape[3]));
  MSGC_CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)w.shape[0],
                                              (int)w.shape[1], (int)w.shape[2], (int)w.shape[3]));
  MSGC_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(pl->cd, (int)p.padH, (int)p.padW, (int)p.strideH, (int)p.strideW,
                                                   (int)p.dilationH, (int)p.dilationW, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
  MSGC_CUDNN_CHECK(cudnnSetConvolutionGroupCount(pl->cd, (int)p.groups));
  MSGC_CUDNN_CHECK(cudnnSetConvolutionMathType(pl->cd, allowTf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  MSGC_CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)ys[0], (int)ys[1],
                                              (int)ys[2], (int)ys[3]));
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int returned = 0;
  MSGC_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(handle(), pl->xd, pl->wd, pl->cd, pl->yd,
                                                        CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf));
  bool found = false;
  for (int i = 0; i < returned && !found; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || (!allowTf32 && perf[i].mathType != CUDNN_FMA_MATH &&
                                                   perf[i].mathType != CUDNN_DEFAULT_MATH))
      continue;
    MSGC_CUDNN_CHECK(cudnnSetConvolutionMathType(pl->cd, perf[i].mathType));  // (the math the algorithm was timed with)
    pl->algo = perf[i].algo;
    pl->workspace = perf[i].memory;
    found = true;
  }
  MSGC_CHECK(found, "conv2d (cuda): cuDNN found no float32 algorithm for x ", shapeString(x.shape), " and weight ",
             shapeString(w.shape));
  ConvPlan& ref = *pl;
  plans.emplace(key, std::move(pl));
  return ref;
}

}  // namespace

TensorPtr conv2dForward(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p) {
  ensureDevice();
  const int64_t effH = p.dilationH * (weight.shape[2] - 1) + 1, effW = p.dilationW * (weight.shape[3] - 1) + 1;
  const Shape ys{x.shape[0], weight.shape[0], (x.shape[2] + 2 * p.padH - effH) / p.strideH + 1,
                 (x.shape[3] + 2 * p.padW - effW) / p.strideW + 1};
  for (int64_t d : x.shape) MSGC_CHECK(d < (int64_t(1) << 31), "conv2d (cuda): x dims must be below 2^31");
  TensorPtr y = emptyTensor(ys, Device::CUDA);
  if (ys[0] == 0) return y;
  ConvPlan& pl = plan(x, weight, p, ys);
  void* ws = pl.workspace ? allocDevice(pl.workspace) : nullptr;
  const float one = 1.f, zero = 0.f;
  cudnnStatus_t s = cudnnConvolutionForward(handle(), &one, pl.xd, x.data(), pl.wd, weight.data(), pl.cd, pl.algo, ws,
                                            pl.workspace, &zero, pl.yd, y->data());
  if (ws) freeDevice(ws, pl.workspace);
  MSGC_CHECK(s == CUDNN_STATUS_SUCCESS, "cudnn: cudnnConvolutionForward failed: ", cudnnGetErrorString(s));
  if (bias) {
    Epilogue e;
    e.bias = bias->data();
    applyEpilogue(y->data(), y->data(), ys[0], ys[1], ys[2] * ys[3], e);
  }
  return y;
}

}  // namespace cuda
}  // namespace msgc

#else  // CUDA without cuDNN: the MSGC kernels run, dense convolutions do not

namespace msgc {
namespace cuda {
TensorPtr conv2dForward(const Tensor&, const Tensor&, const Tensor*, const Conv2dParams&) {
  fail("conv2d (cuda): this build has the CUDA backend without cuDNN; rebuild with cuDNN found (CUDNN_ROOT) for "
       "dense convolutions on the GPU");
}
}  // namespace cuda
}  // namespace msgc

#endif
