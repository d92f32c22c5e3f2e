// onednn_direct.cc: the baseline for bench/ops.js — oneDNN convolutions called directly from C++, each in the
// layout oneDNN prefers (format_tag::any for every tensor), primitives and memory created once, then timed.
// Reads shapes from stdin, one per line: N C H W K kH kW strideH strideW padH padW groups reps
// Prints one JSON object per line: {"fwd": ms, "bwdData": ms, "bwdWeights": ms} (best of reps).
#include <chrono>
#include <dnnl.hpp>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

static double nowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void fill(memory& m, float v) {
  float* p = static_cast<float*>(m.get_data_handle());
  size_t n = m.get_desc().get_size() / sizeof(float);
  for (size_t i = 0; i < n; i++) p[i] = v * (float)((i * 7919) % 97) / 97.f;
}

int main() {
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::istringstream is(line);
    long N, C, H, W, K, kh, kw, sh, sw, ph, pw, g, reps;
    is >> N >> C >> H >> W >> K >> kh >> kw >> sh >> sw >> ph >> pw >> g >> reps;
    long OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    memory::dims src{N, C, H, W}, dst{N, K, OH, OW};
    memory::dims wei = g == 1 ? memory::dims{K, C, kh, kw} : memory::dims{g, K / g, C / g, kh, kw};
    memory::dims strides{sh, sw}, pad{ph, pw}, padR{(OH - 1) * sh + kh - H - ph, (OW - 1) * sw + kw - W - pw};
    memory::desc srcMd(src, dt::f32, tag::any), dstMd(dst, dt::f32, tag::any), weiMd(wei, dt::f32, tag::any);
    convolution_forward::primitive_desc fpd(
        convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, srcMd, weiMd, dstMd,
                                  strides, pad, padR),
        eng);
    convolution_backward_data::primitive_desc dpd(
        convolution_backward_data::desc(algorithm::convolution_direct, srcMd, weiMd, dstMd, strides, pad, padR), eng,
        fpd);
    convolution_backward_weights::primitive_desc wpd(
        convolution_backward_weights::desc(algorithm::convolution_direct, srcMd, weiMd, dstMd, strides, pad, padR),
        eng, fpd);
    convolution_forward fwd(fpd);
    convolution_backward_data bwdData(dpd);
    convolution_backward_weights bwdWeights(wpd);
    memory x(fpd.src_desc(), eng), w(fpd.weights_desc(), eng), y(fpd.dst_desc(), eng);
    memory gy(dpd.diff_dst_desc(), eng), gx(dpd.diff_src_desc(), eng), gw(wpd.diff_weights_desc(), eng);
    memory xw(wpd.src_desc(), eng), gyw(wpd.diff_dst_desc(), eng), wd(dpd.weights_desc(), eng);
    fill(x, 1.f); fill(w, 0.1f); fill(gy, 0.5f); fill(xw, 1.f); fill(gyw, 0.5f); fill(wd, 0.1f);
    double best[3] = {1e30, 1e30, 1e30};
    for (long r = 0; r < reps + 1; r++) {  // the first round warms up
      double t0 = nowMs();
      fwd.execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
      s.wait();
      double t1 = nowMs();
      bwdData.execute(s, {{DNNL_ARG_DIFF_DST, gy}, {DNNL_ARG_WEIGHTS, wd}, {DNNL_ARG_DIFF_SRC, gx}});
      s.wait();
      double t2 = nowMs();
      bwdWeights.execute(s, {{DNNL_ARG_SRC, xw}, {DNNL_ARG_DIFF_DST, gyw}, {DNNL_ARG_DIFF_WEIGHTS, gw}});
      s.wait();
      double t3 = nowMs();
      if (r == 0) continue;
      best[0] = std::min(best[0], t1 - t0);
      best[1] = std::min(best[1], t2 - t1);
      best[2] = std::min(best[2], t3 - t2);
    }
    std::cout << "{\"fwd\":" << best[0] << ",\"bwdData\":" << best[1] << ",\"bwdWeights\":" << best[2] << "}"
              << std::endl;
  }
  return 0;
}
