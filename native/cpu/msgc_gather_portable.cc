// msgc_gather_portable.cc: the gathered MSGC convolution where the AVX-512 kernels do not run (an im2col of the
// selected channels per (sample, head) and oneDNN's sgemm), and the zeroing of outputs an output mask leaves out
// for the paths that compute every output. See msgc_gather.cc for the design.
#include "msgc_gather.h"
#include "msgc/errors.h"

namespace msgc {
namespace gather {

void runSgemm(const Geometry& g, const Selection& sel, const Source& src, const float* scale, const float* WT,
              float* y) {
  const RowPlan rp = planRows(g, Rows::Im2col, src.block, false);
  int64_t maxSel = 0;
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t i = 0; i < g.G; i++) maxSel = std::max(maxSel, sel.count(n, i));
  const int threads = omp_get_max_threads();
  const int64_t items = g.N * g.G;
  const bool outer = items >= 2 * threads && threads > 1;
  struct PerThread {
    Buffer rows, weights;
    std::vector<int64_t> runs;
  };
  std::vector<PerThread> pt(outer ? threads : 1);
  for (auto& t : pt) {
    t.rows.get((size_t)maxSel * rp.chanStride);
    t.weights.get((size_t)maxSel * g.T * g.Og);
  }
  auto run = [&](int64_t item, PerThread& t) {
    const int64_t n = item / g.G, i = item % g.G, ns = sel.count(n, i);
    float* out = y + (n * g.O + i * g.Og) * g.OHW;
    if (ns == 0) {
      std::memset(out, 0, g.Og * g.OHW * sizeof(float));
      return;
    }
    const int32_t* si = sel.sel(n, i);
    const float* srow = scale + (n * g.G + i) * g.C;
    float* rows = t.rows.st->data;
    float* wp = t.weights.st->data;
    blockRuns(si, ns, src.block, t.runs);
    for (size_t r = 0; r + 1 < t.runs.size(); r++) {
      float* dst[16];
      for (int64_t j = t.runs[r]; j < t.runs[r + 1]; j++) dst[j - t.runs[r]] = rows + j * rp.chanStride;
      fillChannels(g, rp, src, n, si + t.runs[r], t.runs[r + 1] - t.runs[r], dst);
    }
    for (int64_t j = 0; j < ns; j++) {
      const int64_t c = si[j];
      for (int64_t tp = 0; tp < g.T; tp++)
        for (int64_t o = 0; o < g.Og; o++)
          wp[(j * g.T + tp) * g.Og + o] = WT[(c * g.T + tp) * g.O + i * g.Og + o] * srow[c];
    }
    // y_i[Og, OHW] = Wpᵀ[Og, K] · rows[K, OHW], with Wp stored [K, Og]
    const int64_t K = ns * g.T;
    cpu::sgemm("msgcConv2d (gathered)", 'T', 'N', g.Og, g.OHW, K, 1.f, wp, g.Og, rows, g.OHW, 0.f, out, g.OHW);
  };
  if (outer) {
    // one (sample, head) per thread at a time; sgemm runs single-threaded inside the parallel region
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; item++) run(item, pt[omp_get_thread_num()]);
  } else {
    for (int64_t item = 0; item < items; item++) run(item, pt[0]);
  }
}

void zeroUnselected(const Geometry& g, const OutSelection& out, int64_t yBlock, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t i = 0; i < g.G; i++) {
      const int32_t* osel = out.sel(n, i);
      for (int64_t o = 0, k = 0; o < g.Og; o++) {
        if (k < out.count(n, i) && osel[k] == o) {
          k++;
          continue;
        }
        const int64_t c = i * g.Og + o;
        if (yBlock > 1) {
          float* yc = y + (n * g.O / yBlock + c / yBlock) * g.OHW * yBlock + c % yBlock;
          for (int64_t q = 0; q < g.OHW; q++) yc[q * yBlock] = 0.f;
        } else {
          std::memset(y + (n * g.O + c) * g.OHW, 0, g.OHW * sizeof(float));
        }
      }
    }
}

}  // namespace gather
}  // namespace msgc
