// msgc_gather_pack.cc: the gathered MSGC convolution's data preparation — which channels each (sample, head)
// selects, the input rows the kernels read (zero-padded copies, im2col rows, nChw16c transposes) and the weight
// layouts they read. See msgc_gather.cc for the design.
#include "msgc_gather.h"
#include "msgc/parallel.h"

namespace msgc {
namespace gather {
using namespace cpu;

namespace {
// One row of scales (C channels): appends the channels with a non-zero scale (NaN counts as selected) to idx[k..),
// ORs them into the union's bit mask (16 channels per word), and clears `unit` if some selected scale is not 1.
// Branch-free: with random gates a branch per channel mispredicted about half the time, and select() was 10% of
// a MobileNetV2 projection (960 channels, batch 32) with the other thread waiting.
void selectRowScalar(const float* row, int64_t C, int32_t* idx, int64_t& k, uint16_t* umask, bool& unit) {
  for (int64_t c = 0; c < C; c++) {
    const float v = row[c];
    const bool on = v != 0.f;  // (true for NaN)
    idx[k] = (int32_t)c;
    k += on;
    umask[c / 16] |= (uint16_t)((unsigned)on << (c % 16));
    unit = unit && (!on || v == 1.f);
  }
}
#if MSGC_GATHER_AVX512
__attribute__((target("avx512f"))) void selectRowAvx512(const float* row, int64_t C, int32_t* idx, int64_t& k,
                                                        uint16_t* umask, bool& unit) {
  const __m512i step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f);
  bool u = unit;
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    const __mmask16 m = C - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c0)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, row + c0);
    const __mmask16 nz = _mm512_mask_cmp_ps_mask(m, v, zero, _CMP_NEQ_UQ);
    const __mmask16 ones = _mm512_mask_cmp_ps_mask(nz, v, one, _CMP_EQ_OQ);
    u = u && nz == ones;
    _mm512_mask_compressstoreu_epi32(idx + k, nz, _mm512_add_epi32(step, _mm512_set1_epi32((int)c0)));
    k += __builtin_popcount((unsigned)nz);
    umask[c0 / 16] |= (uint16_t)nz;
  }
  unit = u;
}
// The same with AVX2: 8 scales per compare; the selected channels are written from the compare's bit mask (one
// store per selected channel). MobileNetV2's 960->160 projection at batch 1 ([1, 4, 960] scales): 13 µs with the
// scalar loop, the largest fixed cost of the call on a CPU without AVX-512.
__attribute__((target("avx2"))) void selectRowAvx2(const float* row, int64_t C, int32_t* idx, int64_t& k,
                                                   uint16_t* umask, bool& unit) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  bool u = unit;
  int64_t c0 = 0;
  for (; c0 + 8 <= C; c0 += 8) {
    const __m256 v = _mm256_loadu_ps(row + c0);
    const unsigned nz = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
    const unsigned ones = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, one, _CMP_EQ_OQ));
    u = u && nz == ones;
    for (unsigned bits = nz; bits; bits &= bits - 1) idx[k++] = (int32_t)(c0 + __builtin_ctz(bits));
    umask[c0 / 16] |= (uint16_t)(nz << (c0 % 16));
  }
  unit = u;
  if (c0 < C) {
    // the last C % 8 channels (selectRowScalar's channel numbers start at 0: shift them)
    const int64_t k0 = k;
    uint16_t tail[1] = {0};
    selectRowScalar(row + c0, C - c0, idx, k, tail, unit);
    for (int64_t j = k0; j < k; j++) idx[j] += (int32_t)c0;
    umask[c0 / 16] |= (uint16_t)(tail[0] << (c0 % 16));
  }
}
#endif
}  // namespace

void select(const Geometry& g, const float* s, Selection& r) {
  r.G = g.G;
  r.start.assign(g.N * g.G + 1, 0);
  r.ustart.assign(g.N + 1, 0);
  r.upos.assign(g.N * g.C, -1);
  r.unit.assign(g.N * g.G, 1);
  r.idx.resize(g.N * g.G * g.C + 16);  // (room for a compress store's full vector)
  r.uni.resize(g.N * g.C + 16);
  const int64_t words = (g.C + 15) / 16;
  std::vector<uint16_t> umask(words);
  // (by the kernels' ISA, so that the tests' MSGC_GATHER_ISA runs each variant on any CPU that has it)
  const Isa isa = gatherIsa();
  const bool avx512 = isa == Isa::Avx512, avx2 = isa == Isa::Avx2;
  int64_t k = 0, u = 0;
  for (int64_t n = 0; n < g.N; n++) {
    std::fill(umask.begin(), umask.end(), (uint16_t)0);
    for (int64_t i = 0; i < g.G; i++) {
      const float* row = s + (n * g.G + i) * g.C;
      bool unit = true;
#if MSGC_GATHER_AVX512
      if (avx512) selectRowAvx512(row, g.C, r.idx.data(), k, umask.data(), unit);
      else if (avx2) selectRowAvx2(row, g.C, r.idx.data(), k, umask.data(), unit);
      else selectRowScalar(row, g.C, r.idx.data(), k, umask.data(), unit);
#else
      (void)avx512, (void)avx2;
      selectRowScalar(row, g.C, r.idx.data(), k, umask.data(), unit);
#endif
      r.unit[n * g.G + i] = unit ? 1 : 0;
      r.start[n * g.G + i + 1] = k;
    }
    // the union in ascending order, and each union channel's position in it
    const int64_t u0 = u;
    for (int64_t w = 0; w < words; w++)
      for (unsigned bits = umask[w]; bits; bits &= bits - 1) {
        const int64_t c = w * 16 + __builtin_ctz(bits);
        r.upos[n * g.C + c] = (int32_t)(u - u0);
        r.uni[u++] = (int32_t)c;
      }
    r.ustart[n + 1] = u;
  }
  r.idx.resize(k);
  r.uni.resize(u);
}

OutSelection selectOutputs(const Geometry& g, const float* m, int64_t K) {
  OutSelection r;
  r.G = g.G;
  r.start.assign(g.N * g.G + 1, 0);
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t i = 0; i < g.G; i++) {
      for (int64_t o = 0; o < g.Og; o++) {
        bool any = false;
        for (int64_t k = 0; k < K && !any; k++) any = m[(n * K + k) * g.O + i * g.Og + o] != 0.f;
        if (any) r.idx.push_back((int32_t)o);
      }
      r.start[n * g.G + i + 1] = (int64_t)r.idx.size();
    }
  return r;
}

#if MSGC_GATHER_AVX512
bool cpuHasAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
#else
bool cpuHasAvx512() { return false; }
#endif

Isa gatherIsa() {
  const char* e = std::getenv("MSGC_GATHER_ISA");
  const std::string want = e ? e : "";
  if (want == "portable") return Isa::Portable;
  if (cpuHasAvx512() && want != "avx2") return Isa::Avx512;
  return cpuHasAvx2Fma() ? Isa::Avx2 : Isa::Portable;
}

// ---- input rows --------------------------------------------------------------------------------------------

// xBlock: x's channel block; strided: the kernel can read pixels xBlock apart (ocvec on nChw16c; AVX2: nChw8c too)
RowPlan planRows(const Geometry& g, Rows rows, int64_t xBlock, bool strided) {
  RowPlan p;
  p.rows = rows;
  p.tapOffset.assign(g.T, 0);
  if (rows == Rows::Planes) {
    p.inPlace = xBlock == 1 || (xBlock > 1 && strided);
    p.pixStride = p.inPlace ? xBlock : 1;
    p.chanStride = g.H * g.W;
  } else if (rows == Rows::Direct) {
    // only the extent the outputs reach: rows [0, Hp) of the padded input
    p.Hp = (g.OH - 1) * g.SH + g.KH;
    p.Wp = (g.OW - 1) * g.SW + g.KW;
    p.chanStride = p.Hp * p.Wp;
    p.pixStride = g.SW;
    p.rowStride = g.SH * p.Wp;
    for (int64_t kh = 0; kh < g.KH; kh++)
      for (int64_t kw = 0; kw < g.KW; kw++) p.tapOffset[kh * g.KW + kw] = kh * p.Wp + kw;
  } else {
    p.chanStride = g.T * g.OHW;
    for (int64_t t = 0; t < g.T; t++) p.tapOffset[t] = t * g.OHW;
  }
  return p;
}

// d[q] = srow[(q*step + off) * es] for q < width, 0 where that column is outside [0, W)
void copyColumns(const Geometry& g, float* d, int64_t width, const float* srow, int64_t es, int64_t off, int64_t step) {
  const int64_t q0 = std::min(width, std::max<int64_t>(0, (-off + step - 1) / step));
  const int64_t q1 = std::max(q0, std::min(width, (g.W - 1 - off) / step + 1));
  for (int64_t q = 0; q < q0; q++) d[q] = 0.f;
  const int64_t iw0 = q0 * step + off;
  if (step == 1 && es == 1) {
    std::memcpy(d + q0, srow + iw0, (q1 - q0) * sizeof(float));
  } else {
    const float* sp = srow + iw0 * es;
    for (int64_t q = q0; q < q1; q++, sp += step * es) d[q] = *sp;
  }
  for (int64_t q = q1; q < width; q++) d[q] = 0.f;
}

// Writes input row ih of one channel (srow, element stride es) wherever the channel's rows at dst hold it.
void emitRow(const Geometry& g, const RowPlan& p, int64_t ih, const float* srow, int64_t es, float* dst) {
  if (p.rows == Rows::Planes) {
    copyColumns(g, dst + ih * g.W, g.W, srow, es, 0, 1);
  } else if (p.rows == Rows::Direct) {
    const int64_t r = ih + g.PH;  // padded row
    if (r < p.Hp) copyColumns(g, dst + r * p.Wp, p.Wp, srow, es, -g.PW, 1);
  } else {
    // row (kh, kw) holds input (oh*SH + kh - PH, ow*SW + kw - PW) for every output pixel
    for (int64_t kh = 0; kh < g.KH; kh++) {
      const int64_t v = ih + g.PH - kh;
      if (v < 0 || v % g.SH != 0 || v / g.SH >= g.OH) continue;
      const int64_t oh = v / g.SH;
      for (int64_t kw = 0; kw < g.KW; kw++)
        copyColumns(g, dst + (kh * g.KW + kw) * g.OHW + oh * g.OW, g.OW, srow, es, kw - g.PW, g.SW);
    }
  }
}

// Zeroes the rows of one channel that no input row reaches (the padding above and below).
void zeroPaddingRows(const Geometry& g, const RowPlan& p, float* dst) {
  if (p.rows == Rows::Direct) {
    for (int64_t r = 0; r < p.Hp; r++)
      if (r < g.PH || r >= g.PH + g.H) std::memset(dst + r * p.Wp, 0, p.Wp * sizeof(float));
  } else if (p.rows == Rows::Im2col) {
    for (int64_t kh = 0; kh < g.KH; kh++)
      for (int64_t oh = 0; oh < g.OH; oh++) {
        const int64_t ih = oh * g.SH + kh - g.PH;
        if (ih >= 0 && ih < g.H) continue;
        for (int64_t kw = 0; kw < g.KW; kw++)
          std::memset(dst + (kh * g.KW + kw) * g.OHW + oh * g.OW, 0, g.OW * sizeof(float));
      }
  }
}

#if MSGC_GATHER_AVX512
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 about the unpack intrinsics' internal temporaries
// dst[l][w] = src[w * 16 + l] for w < W and the lanes l with dst[l] != nullptr: a row of one 16-channel block
// of nChw16c as plain rows (16×16 register transposes, masked at the row end)
__attribute__((target("avx512f"))) void transposeRow16(const float* src, int64_t W, float* const* dst) {
  for (int64_t w0 = 0; w0 < W; w0 += 16) {
    const int rem = (int)std::min<int64_t>(16, W - w0);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = i < rem ? _mm512_loadu_ps(src + (w0 + i) * 16) : _mm512_setzero_ps();
    transpose16(r, t);
    const __mmask16 mk = (__mmask16)((1u << rem) - 1);
    for (int l = 0; l < 16; l++)
      if (dst[l]) _mm512_mask_storeu_ps(dst[l] + w0, mk, t[l]);
  }
}

// dst[w * 16 + l] = src[l][w] for w < W, l < 16: 16 plain planes as one 16-channel block of nChw16c (the same
// register transposes the other way)
__attribute__((target("avx512f"))) void blockRow16(const float* const* src, int64_t W, float* dst) {
  for (int64_t w0 = 0; w0 < W; w0 += 16) {
    const int rem = (int)std::min<int64_t>(16, W - w0);
    const __mmask16 mk = (__mmask16)((1u << rem) - 1);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_maskz_loadu_ps(mk, src[i] + w0);
    transpose16(r, t);
    for (int m = 0; m < rem; m++) _mm512_storeu_ps(dst + (w0 + m) * 16, t[m]);
  }
}
#pragma GCC diagnostic pop
#endif

// Splits ascending channels cs[0..count) into runs that share a channel block of x: starts, then count.
void blockRuns(const int32_t* cs, int64_t count, int64_t block, std::vector<int64_t>& starts) {
  starts.clear();
  for (int64_t k = 0; k < count; k++)
    if (k == 0 || block == 1 || cs[k] / block != cs[k - 1] / block) starts.push_back(k);
  starts.push_back(count);
}

// Fills the rows of channels cs[0..count) of sample n (one run of blockRuns()) into dst[k], row by row, so that
// a blocked x's row of 16 channels stays in L1 while its channels are picked out.
void fillChannels(const Geometry& g, const RowPlan& p, const Source& src, int64_t n, const int32_t* cs, int64_t count,
                  float* const* dst) {
  for (int64_t k = 0; k < count; k++) zeroPaddingRows(g, p, dst[k]);
#if MSGC_GATHER_AVX512
  if (src.block == 16 && cpuHasAvx512()) {
    const float* blockPlane = src.plane(g, n, cs[0] - cs[0] % 16);
    float* lane[16] = {nullptr};
    if (p.rows == Rows::Planes || p.rows == Rows::Direct) {
      // transpose straight into the channels' rows (Direct: the interior of the padded plane)
      const bool direct = p.rows == Rows::Direct;
      const int64_t width = direct ? std::max<int64_t>(0, std::min(g.W, p.Wp - g.PW)) : g.W;
      if (direct)
        for (int64_t k = 0; k < count; k++)
          for (int64_t r = g.PH; r < std::min(p.Hp, g.PH + g.H); r++) {
            float* row = dst[k] + r * p.Wp;
            std::memset(row, 0, std::min(g.PW, p.Wp) * sizeof(float));
            if (g.PW + width < p.Wp) std::memset(row + g.PW + width, 0, (p.Wp - g.PW - width) * sizeof(float));
          }
      for (int64_t ih = 0; ih < g.H; ih++) {
        const int64_t r = direct ? ih + g.PH : ih;
        if (direct && r >= p.Hp) break;
        for (int64_t k = 0; k < count; k++)
          lane[cs[k] % 16] = direct ? dst[k] + r * p.Wp + g.PW : dst[k] + ih * g.W;
        transposeRow16(blockPlane + ih * g.W * 16, width, lane);
      }
      return;
    }
    // Im2col: transpose a row once (it stays in L1), then copy it out per tap
    thread_local std::vector<float> rows;
    rows.resize(16 * g.W);
    for (int l = 0; l < 16; l++) lane[l] = rows.data() + l * g.W;
    for (int64_t ih = 0; ih < g.H; ih++) {
      transposeRow16(blockPlane + ih * g.W * 16, g.W, lane);
      for (int64_t k = 0; k < count; k++) emitRow(g, p, ih, rows.data() + (cs[k] % 16) * g.W, 1, dst[k]);
    }
    return;
  }
#endif
  for (int64_t ih = 0; ih < g.H; ih++)
    for (int64_t k = 0; k < count; k++)
      emitRow(g, p, ih, src.plane(g, n, cs[k]) + ih * g.W * src.block, src.block, dst[k]);
}

// Planes only: columns [p0, p1) of the flattened planes of channels cs[0..count) (one run of blockRuns()).
void fillPlanes(const Geometry& g, const Source& src, int64_t n, const int32_t* cs, int64_t count, float* const* dst,
                int64_t p0, int64_t p1) {
#if MSGC_GATHER_AVX512
  if (src.block == 16 && cpuHasAvx512()) {
    float* lane[16] = {nullptr};
    for (int64_t k = 0; k < count; k++) lane[cs[k] % 16] = dst[k] + p0;
    transposeRow16(src.plane(g, n, cs[0] - cs[0] % 16) + p0 * 16, p1 - p0, lane);
    return;
  }
#endif
  for (int64_t k = 0; k < count; k++) {
    const float* plane = src.plane(g, n, cs[k]);
    for (int64_t q = p0; q < p1; q++) dst[k][q] = plane[q * src.block];
  }
}

// ---- weights -----------------------------------------------------------------------------------------------

// The weight [O, C, KH, KW] in the order a kernel reads it, cached on the weight's storage until the weight is
// written. ocvec: [G][B][C][T][16] with B = ceil(O/G / 16) blocks of 16 outputs per head (zeros past a head's
// last output), so a channel's taps for 16 outputs are one contiguous run; otherwise [C][T][O].
const float* weightLayout(const Tensor& weight, const Geometry& g, bool ocvec) {
  const int64_t C = g.C, T = g.T, O = g.O, Og = g.Og, B = (Og + 15) / 16;
  const std::string key = ocvec ? "msgc-gather:GBCT16:" + std::to_string(g.G) : "msgc-gather:CTO";
  auto& cache = weight.storage->derived;
  auto it = cache.find(key);
  if (it != cache.end() && it->second.version == weight.storage->version) return it->second.copy->data;
  const float* w = plainData(weight);
  const size_t floats = ocvec ? (size_t)g.G * B * C * T * 16 : (size_t)O * C * T;
  auto st = std::make_shared<Storage>(floats * sizeof(float), weight.device());
  float* d = st->data;
  if (ocvec) {
    parallelFor2(g.G * B, C, O * C * T > 65536, [&](int64_t ib, int64_t c) {
      for (int64_t t = 0; t < T; t++)
        for (int64_t l = 0; l < 16; l++) {
          const int64_t oh = ib % B * 16 + l;  // output within the head
          d[((ib * C + c) * T + t) * 16 + l] = oh < Og ? w[((ib / B * Og + oh) * C + c) * T + t] : 0.f;
        }
    });
  } else {
    parallelFor(C, O * C * T > 65536, [&](int64_t c) {
      for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) d[(c * T + t) * O + o] = w[(o * C + c) * T + t];
    });
  }
  cache[key] = Storage::Derived{weight.storage->version, st};
  return st->data;
}

}  // namespace gather
}  // namespace msgc
