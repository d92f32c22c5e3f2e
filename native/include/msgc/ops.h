// ops.h: the op interface, one function per kernel. Every backend implements this table; N-API bindings
// validate arguments before calling, so kernels assume valid input (shapes noted per function).
#pragma once
#include <array>
#include <cstdint>

#include "msgc/tensor.h"

namespace msgc {

// ---- convolution (cpu/conv.cc) -------------------------------------------------------------------------------
struct Conv2dParams {
  int64_t strideH = 1, strideW = 1, padH = 0, padW = 0, dilationH = 1, dilationW = 1, groups = 1;
};
// x: [N, C, H, W], weight: [K, C/groups, kH, kW], bias: [K] or null -> y: [N, K, OH, OW]
TensorPtr conv2dForward(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p);
// Inference: act(BN(conv(x, weight) + bias)) in one oneDNN convolution, the eval BatchNorm folded into the weights
// and bias (cached on the weight until it or a BN parameter is written) and the activation a post-op.
// act: -1 none, else Activation::ReLU or Activation::ReLU6.
TensorPtr conv2dBnActEval(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p,
                          const Tensor& runningMean, const Tensor& runningVar, const Tensor* gamma, const Tensor* beta,
                          float eps, int act);
struct Conv2dGrads {
  TensorPtr x, weight, bias;
};
// gy: [N, K, OH, OW]; computes the gradients asked for.
Conv2dGrads conv2dBackward(const Tensor& x, const Tensor& weight, const Tensor& gy, const Conv2dParams& p,
                           bool needX, bool needWeight, bool needBias);

// ---- batch normalisation (cpu/norm.cc) ---------------------------------------------------------------------
// x: [N, C, H, W] (or [N, C]); runningMean/Var: [C] (updated in place when training); weight/bias: [C] or null.
// Returns y and, for the backward, the statistics used (batch mean and biased variance when training, the
// running ones in eval).
struct BatchNormResult {
  TensorPtr y, mean, var;
};
BatchNormResult batchNorm2dForward(const Tensor& x, Tensor& runningMean, Tensor& runningVar, const Tensor* weight,
                                   const Tensor* bias, bool training, float momentum, float eps);
struct BatchNormGrads {
  TensorPtr x, weight, bias;
};
BatchNormGrads batchNorm2dBackward(const Tensor& x, const Tensor& gy, const Tensor& mean, const Tensor& var,
                                   const Tensor* weight, bool training, float eps, bool needWeightBias);

// Inference fusion of batch norm with running statistics, an optional residual and an activation, in one pass:
//   y = act(x · γ/√(var + eps) + (β − mean · γ/√(var + eps)) [+ residual])
// act: -1 none, else an Activation (ReLU or ReLU6). x: [N, C, H, W] in any layout; y keeps x's layout (plain,
// nChw8c and nChw16c run our loop, other layouts run on a plain copy). residual: x's shape, any layout.
// means (optional): also the per-channel spatial means of y, [N, C, 1, 1] (the next MSGC block's gate context).
TensorPtr batchNormActEval(const Tensor& x, const Tensor& runningMean, const Tensor& runningVar, const Tensor* weight,
                           const Tensor* bias, float eps, int act, const Tensor* residual, TensorPtr* means = nullptr);

// ---- activations (cpu/activation.cc): y keeps x's layout --------------------------------------------------
enum class Activation { ReLU, ReLU6, Sigmoid };
TensorPtr activationForward(Activation a, const Tensor& x);
// relu/relu6 differentiate through x, sigmoid through y.
TensorPtr activationBackward(Activation a, const Tensor& xOrY, const Tensor& gy);
// The training tail of a residual block (residual_tail.cc): y = act(a + r) in a's layout (act: -1 none, 0 ReLU,
// 1 ReLU6; r null: y = act(a), a block without a shortcut, or a stem), with y's per-channel means [N, C, 1, 1] when
// pooled; backward g = (gy + gc) · act'(y) for a and r, gc a [N, C, 1, 1] gradient broadcast over the pixels (the
// pool's), or null.
struct ResidualTail {
  TensorPtr y, pooled;
};
struct ResidualTailGrads {
  TensorPtr a, r;
};
ResidualTail residualTailForward(const Tensor& a, const Tensor* r, int act, bool pooled);
ResidualTailGrads residualTailBackward(const Tensor& y, const Tensor& gy, const Tensor* gChannels, int act, bool needA,
                                       bool needR);

// ---- pooling (cpu/pool.cc) --------------------------------------------------------------------------------
enum class PoolKind { Max, Avg };
struct Pool2dParams {
  int64_t kernelH, kernelW, strideH, strideW, padH, padW;
};
struct PoolResult {
  TensorPtr y, workspace;  // workspace: opaque (max pooling's argmax), null for average pooling
};
// training = false (inference, no gradient to follow): max pooling writes no workspace (r.workspace is null)
PoolResult pool2dForward(PoolKind kind, const Tensor& x, const Pool2dParams& p, bool training = true);
TensorPtr pool2dBackward(PoolKind kind, const Tensor& x, const Tensor& gy, const Tensor* workspace,
                         const Pool2dParams& p);

// ---- linear (cpu/linear.cc) -------------------------------------------------------------------------------
// x: [N, in], weight: [out, in], bias: [out] or null -> y: [N, out]
TensorPtr linearForward(const Tensor& x, const Tensor& weight, const Tensor* bias);
struct LinearGrads {
  TensorPtr x, weight, bias;
};
LinearGrads linearBackward(const Tensor& x, const Tensor& weight, const Tensor& gy, bool needX, bool needWeight,
                           bool needBias);

// ---- loss (cpu/loss.cc) -----------------------------------------------------------------------------------
// logits: [N, K], labels: N ints in [0, K). Returns the mean loss (a [] tensor) and softmax probabilities.
struct CrossEntropyResult {
  TensorPtr loss, probs;
};
CrossEntropyResult crossEntropyForward(const Tensor& logits, const int32_t* labels, float labelSmoothing);
// gLoss: scalar multiplier (the upstream gradient of the mean loss).
TensorPtr crossEntropyBackward(const Tensor& probs, const int32_t* labels, float labelSmoothing, float gLoss);
// Knowledge distillation (Hinton et al.): loss = T^2 * mean over n of KL(softmax(t_n / T) || softmax(s_n / T)).
// student, teacher: [N, K]. Returns the loss and softmax(s/T) - softmax(t/T), from which the student's gradient
// is gLoss * T / N * that difference (the teacher gets none).
struct DistillationResult {
  TensorPtr loss, diff;
};
DistillationResult distillationForward(const Tensor& student, const Tensor& teacher, float temperature);
TensorPtr distillationBackward(const Tensor& diff, float temperature, float gLoss);

// ---- elementwise and reductions (cpu/elementwise.cc) -------------------------------------------------------
enum class Binary { Add, Sub, Mul };
// a: any shape; b: same rank with every dim equal to a's or 1 (or a single element). y has a's shape.
TensorPtr binaryForward(Binary op, const Tensor& a, const Tensor& b);
// Sums g over the dims where `target` is 1 (reduces a gradient of a's shape to b's broadcast shape).
TensorPtr reduceToShape(const Tensor& g, const Shape& target);
TensorPtr scale(const Tensor& x, float alpha);  // alpha * x
TensorPtr sumAll(const Tensor& x);              // [] tensor
TensorPtr broadcastScalar(const Tensor& scalar, const Shape& shape, float alpha);  // alpha * scalar everywhere
void addInPlace(Tensor& dst, const Tensor& src, float alpha);  // dst += alpha * src (same shape)
// Channel broadcasts of src [N, C, 1, 1] over [N, C, H, W] (a global average pool's gradient, kept unexpanded by
// autograd): alpha·src expanded to like's shape, in like's channel-blocked layout (plain for other layouts); and
// dst += alpha·src broadcast over H, W in dst's own layout.
TensorPtr expandChannels(const Tensor& src, const Tensor& like, float alpha);
void addChannelsInPlace(Tensor& dst, const Tensor& src, float alpha);

// ---- shape ops (cpu/shape.cc) -----------------------------------------------------------------------------
TensorPtr reshape(const Tensor& x, const Shape& shape);  // shares memory with plain x
TensorPtr concatChannels(const std::vector<const Tensor*>& xs);  // along dim 1
TensorPtr sliceChannels(const Tensor& x, int64_t start, int64_t end);
TensorPtr sliceChannelsBackward(const Tensor& gy, const Shape& xShape, int64_t start);  // zeros elsewhere
TensorPtr toPlain(const Tensor& x);  // a new plain tensor with x's values (always a copy)
TensorPtr cloneTensor(const Tensor& x);  // a copy in x's own layout
void copyFromHost(Tensor& dst, const float* src);  // dst becomes plain with these values

// ---- optimiser (cpu/optim.cc) -----------------------------------------------------------------------------
// torch.optim.SGD semantics (dampening 0): d = g + wd*p; buf = m*buf + d; d = nesterov ? d + m*buf : buf;
// p -= lr * d. momentumBuffer may be null when momentum == 0.
void sgdStep(Tensor& param, const Tensor& grad, Tensor* momentumBuffer, float lr, float momentum, float weightDecay,
             bool nesterov);
// Σ x² in float64 over the values (gradient-norm clipping); x *= alpha in place, in x's layout.
double sumSquares(const Tensor& x);
void scaleInPlace(Tensor& x, float alpha);

}  // namespace msgc

namespace msgc {

// ---- MSGC convolution, masked execution (cpu/msgc_conv.cc) -------------------------------------------------
// y[n, group i] = W_i ⋆ (scale[n, i, :] ⊙ x[n]); head i owns output channels [i*O/G, (i+1)*O/G).
// x: [N, C, H, W], weight: [O, C, k, k] (no bias), scale: [N, G, C] -> y: [N, O, OH, OW]
struct MsgcConvParams {
  int64_t strideH = 1, strideW = 1, padH = 0, padW = 0, heads = 1;
  // Backward only: x is the output of this activation (-1 none, 0 ReLU, 1 ReLU6) and the input gradient is taken
  // through it: gx · act'(x), with act' read from x (ReLU x > 0, ReLU6 0 < x < 6), as residualTail reads it from its
  // output. The kernels that write gx apply it while gx is in cache, instead of the activation's own backward pass.
  int inputAct = -1;
};
// The plain convolution parameters of an MSGC convolution (its strides and padding; one group).
inline Conv2dParams convParams(const MsgcConvParams& p) {
  Conv2dParams c;
  c.strideH = p.strideH;
  c.strideW = p.strideW;
  c.padH = p.padH;
  c.padW = p.padW;
  return c;
}
TensorPtr msgcConvForward(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p);
// cpu/msgc_gather.cc: only the selected channels (inference). outMask [N, K, O] (optional): only outputs o with
// outMask[n, k, o] != 0 for some k are computed, the others are zeros (producer/consumer skipping, spec §2.10).
// bn (optional): the eval BatchNorm, residual and activation after the conv, fused into the kernels' output
// (y = act(bn(conv) + residual), as batchNormActEval; `means` receives y's global average pool [N, O, 1, 1]).
struct FusedBnAct {
  const Tensor* runningMean = nullptr;
  const Tensor* runningVar = nullptr;
  const Tensor* weight = nullptr;  // γ (optional)
  const Tensor* bias = nullptr;    // β (optional)
  float eps = 1e-5f;
  int act = -1;                    // -1 none, else Activation::ReLU / ReLU6
  const Tensor* residual = nullptr;
};
// Compaction (CPU, AVX2 / AVX-512 kernels; inference), so that the channels no head selects are neither computed
// nor stored between a producer and its consumers (MobileNetV2's expansion, depthwise and projection convs, spec
// §2.10). A tensor compacted by a mask [N, K, C] holds in channel slot k of sample n the k-th channel (ascending)
// that some row of the mask selects, and zeros in the slots past the last one; its shape is the full one.
//   output     (one head with outMask): y compacted by outMask;
//   inputMask  x is compacted by inputMask [N, K, C]: every channel the scale selects must be one inputMask does.
struct Compaction {
  bool output = false;
  const Tensor* inputMask = nullptr;
};
TensorPtr msgcConvForwardGathered(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                                  const Tensor* outMask = nullptr, const FusedBnAct* bn = nullptr,
                                  TensorPtr* means = nullptr, const Compaction* compact = nullptr);
// cpu/depthwise_compact.cc: the eval depthwise convolution (weight [C, 1, KH, KW], no bias) + BatchNorm (+ act) of
// x compacted by mask [N, K, C] (see Compaction), only over the occupied channel slots: y is compacted alike.
TensorPtr depthwiseBnActCompactEval(const Tensor& x, const Tensor& mask, const Tensor& weight, const FusedBnAct& bn,
                                    int64_t strideH, int64_t strideW, int64_t padH, int64_t padW);
// The SIMD kernels the gathered execution runs on this CPU: "avx512", "avx2" (AVX2 + FMA) or "portable" (sgemm on
// packed copies); MSGC_GATHER_ISA can force "avx2" or "portable".
const char* gatheredKernelIsa();
// The masked execution with the same epilogue (inference): per-sample convs apply it to each sample's output while
// it is in cache; otherwise msgcConvForward, then batchNormActEval.
TensorPtr msgcConvForwardMaskedBn(const Tensor& x, const Tensor& weight, const Tensor& scale, const MsgcConvParams& p,
                                  const FusedBnAct& bn, TensorPtr* means = nullptr);
struct MsgcConvGrads {
  TensorPtr x, weight, scale;
  bool actApplied = false;  // (internal: the path applied MsgcConvParams::inputAct to x's gradient)
};
MsgcConvGrads msgcConvBackward(const Tensor& x, const Tensor& weight, const Tensor& scale, const Tensor& gy,
                               const MsgcConvParams& p, bool needX, bool needWeight, bool needScale);

// ---- gates (cpu/gate.cc) ----------------------------------------------------------------------------------
// Gumbel(logistic)-sigmoid with a straight-through estimator. Training: u ~ U[0,1) from `seed`,
// g = log(u + 1e-8) - log(1 - u + 1e-8), soft = sigmoid((logits + g) / temperature), mask = 1[soft >= 0.5].
// Eval: mask = 1[logits >= 0] (soft is null). mask/soft have logits' shape.
struct GateResult {
  TensorPtr mask, soft;
};
GateResult gateForward(const Tensor& logits, float temperature, bool training, uint64_t seed);
// d mask / d logits := soft (1 - soft) / temperature
TensorPtr gateBackward(const Tensor& soft, const Tensor& gy, float temperature);
// A gate/attention head in eval, fused (inference only, no gradient): ctx [N, Cc] -> 1×1 conv w1 [B, Cc] ->
// BatchNorm (running stats) -> ReLU -> 1×1 conv w2 [K, B] + b2 -> [N, K], thresholded at 0 when `threshold`.
TensorPtr squeezeHeadEval(const Tensor& ctx, const Tensor& w1, const Tensor& mean, const Tensor& var,
                          const Tensor* gamma, const Tensor* beta, float eps, const Tensor& w2, const Tensor& b2,
                          bool threshold);
// The same head in training (ctx [N, Cc, 1, 1], as the pooled context): BatchNorm with the batch statistics
// (biased variance), the running statistics updated in place as batchNorm2dForward does (momentum, unbiased
// variance), so that the head is two GEMMs and two passes over [N, B] instead of six oneDNN calls on 1×1 maps.
// Returns z [N, K] and what the backward needs: the conv output h1 [N, B], the batch mean and 1/sqrt(var + eps)
// [B], and the ReLU output h [N, B].
struct SqueezeHeadTrain {
  TensorPtr z, h1, mean, invStd, h;
};
SqueezeHeadTrain squeezeHeadTrainForward(const Tensor& ctx, const Tensor& w1, Tensor& runningMean, Tensor& runningVar,
                                         const Tensor* gamma, const Tensor* beta, float momentum, float eps,
                                         const Tensor& w2, const Tensor& b2);
struct SqueezeHeadGrads {
  TensorPtr ctx, w1, gamma, beta, w2, b2;
};
// gz: [N, K]; gradients of ctx [N, Cc, 1, 1], w1, gamma, beta, w2 (4-d, as the parameters) and b2 (null where
// not needed, and gamma / beta where the BN has none)
SqueezeHeadGrads squeezeHeadTrainBackward(const Tensor& ctx, const Tensor& w1, const Tensor* gamma, const Tensor& w2,
                                          const SqueezeHeadTrain& saved, const Tensor& gz, bool needCtx, bool needParams);
// Statistics of gate values m [N, G, C] for the MAC tally and the execution choice, without a copy to JavaScript:
// sum of all entries, and Σ over (n, c) of Π_i (1 − m[n, i, c]) (channels no head selects, for binary gates),
// both accumulated in float64, per sample in index order and then over the samples in order (the same result on
// any number of threads); allOnes: every entry is exactly 1.
struct MaskStats {
  double sum = 0, unselected = 0;
  bool allOnes = true;
};
MaskStats maskStats(const Tensor& m);
// A gate head and its training gate in one op (a GateHead in training on a pooled context): the squeeze head's
// training forward, then, over its logits z [N, K] scaled by invSigma (the gate noise's scale σ: 1/σ), the Gumbel
// gate of gateForward with `temperature` and `seed` (the same bits as F.scale and gateForward after
// squeezeHeadTrainForward), and the gates' maskStats. mask and soft: [N, heads, K / heads]; head: what
// squeezeHeadTrainBackward needs (its z left null: the logits are not kept).
struct GateHeadTrain {
  SqueezeHeadTrain head;
  TensorPtr mask, soft;
  MaskStats stats;
};
GateHeadTrain gateHeadTrainForward(const Tensor& ctx, const Tensor& w1, Tensor& runningMean, Tensor& runningVar,
                                   const Tensor* gamma, const Tensor* beta, float momentum, float eps, const Tensor& w2,
                                   const Tensor& b2, int64_t heads, float temperature, float invSigma, uint64_t seed);
// Its backward from the gates' gradient gm: gz = gm · soft (1 − soft) / temperature (the straight-through gate; σ
// cancels: d soft / d z = soft (1 − soft)·(1/σ)/(τ/σ)), then squeezeHeadTrainBackward.
SqueezeHeadGrads gateHeadTrainBackward(const Tensor& ctx, const Tensor& w1, const Tensor* gamma, const Tensor& w2,
                                       const SqueezeHeadTrain& saved, const Tensor& soft, const Tensor& gm,
                                       float temperature, bool needCtx, bool needParams);
// The same statistics as a tensor [3 + G] on m's device, plus each head's sum: [sum, unselected, allOnes (1 or
// 0), Σ_{n,c} m[n, 0, c], ..., Σ_{n,c} m[n, G-1, c]] (sums in float64, stored as float32: exact for binary gates
// up to 2^24 entries). Reading it is deferred to whoever needs the numbers (on the GPU: no synchronisation here).
TensorPtr gateSummary(const Tensor& m);

}  // namespace msgc
