// msgc_gather_job_compute.h: the gathered MSGC convolution's per-item work (Job's member functions, declared in
// msgc_gather_job.h, which includes this at its end): the fused BN epilogue applied to the chunk just written
// (postBlocks, postPlain, ...), and Job::compute / computeAvx2, which run one item (sample, head, output blocks,
// pixel chunk) with the micro-kernels. See msgc_gather.cc for the design.
#pragma once

namespace msgc {
namespace gather {

inline void Job::postBlocks(int64_t n, int64_t b0, int64_t count, const Chunk& c, int64_t k) const {
#if MSGC_GATHER_AVX512
  alignas(64) float sums[16];
  for (int64_t b = b0; b < b0 + count; b++) {
    const int64_t off = ((n * (g.O / yl) + b) * g.OHW + c.outPos) * yl;
    (yl == 8 ? postBlock8 : postBlock16)(y + off, post->residual ? post->residual + off : nullptr, c.r, c.q,
                                         rowStep(), post->a + b * yl, post->b + b * yl, post->clamp, post->lo,
                                         post->hi, post->partial ? sums : nullptr);
    if (post->partial)
      for (int64_t l = 0; l < yl; l++) post->partial[(n * g.O + b * yl + l) * post->chunks + k] = sums[l];
  }
#endif
}

inline void Job::postBlocked(int64_t n, int64_t blk0, int64_t nblk, const Chunk& c, int64_t k) const {
  postBlocks(n, blk0 * 16 / yl, nblk * 16 / yl, c, k);
}

inline void Job::prefetchResidualPlain(int64_t n, int64_t o0, int64_t o1, const Chunk& c) const {
  if (!post || !post->residual) return;
  const int64_t step = rowStep();
  for (int64_t o = o0; o < o1; o++) {
    const float* rb = post->residual + (n * g.O + o) * g.OHW + c.outPos;
    for (int64_t r = 0; r < c.r; r++)
      for (int64_t p = 0; p < c.q; p += 16) __builtin_prefetch(rb + r * step + p, 0, 3);
  }
}

inline void Job::postPlain(int64_t n, int64_t o0, int64_t o1, const Chunk& c, int64_t k) const {
#if MSGC_GATHER_AVX512
  float sums[kMaxPlain];
  for (int64_t o = o0; o < o1; o += kMaxPlain) {
    const int64_t planes = std::min<int64_t>(kMaxPlain, o1 - o), off = (n * g.O + o) * g.OHW + c.outPos;
    (isa == Isa::Avx2 ? postPlanes2 : postPlanes)(y + off, post->residual ? post->residual + off : nullptr, planes,
                                                  g.OHW, c.r, c.q, rowStep(), post->a + o, post->b + o, post->clamp,
                                                  post->lo, post->hi, post->partial ? sums : nullptr);
    if (post->partial)
      for (int64_t l = 0; l < planes; l++) post->partial[(n * g.O + o + l) * post->chunks + k] = sums[l];
  }
#endif
}

inline void Job::postEmpty(int64_t n, int64_t i) const {
  for (int64_t k = 0; k < chunkCount(); k++) {
    const Chunk c = chunk(k);
    if (plainOut()) postPlain(n, i * g.Og, (i + 1) * g.Og, c, k);
    else postBlocks(n, i * g.Og / yl, g.Og / yl, c, k);
  }
}

inline void Job::storeShifted(int64_t n, int64_t i, int64_t b, int64_t valid, const float* tile, const Chunk& c,
                              int64_t k) const {
#if MSGC_GATHER_AVX512
  const int64_t o0 = i * g.Og + b * 16;
  alignas(64) float sums[16];
  float* yn = y + n * g.O * g.OHW;
  const float* rn = post && post->residual ? post->residual + n * g.O * g.OHW : nullptr;
  storeShifted16(tile, valid, o0, yn, rn, g.OHW, c.outPos, c.r, c.q, rowStep(), post ? post->a + o0 : nullptr,
                 post ? post->b + o0 : nullptr, post && post->clamp, post ? post->lo : 0.f, post ? post->hi : 0.f,
                 post && post->partial ? sums : nullptr);
  if (post && post->partial)
    for (int64_t l = 0; l < valid; l++) post->partial[(n * g.O + o0 + l) * post->chunks + k] = sums[l];
#endif
}

inline void Job::emptyHead(int64_t n, int64_t i) const {
  if (!shifted) {
    std::memset(headOut(n, i), 0, g.Og * g.OHW * sizeof(float));
    if (post) postEmpty(n, i);
    return;
  }
  // (zero tiles through storeShifted, chunk by chunk)
  alignas(64) float zeros[kMaxPixels * 16] = {};
  for (int64_t k = 0; k < chunkCount(); k++) {
    const Chunk c = chunk(k);
    for (int64_t b = 0; b * 16 < g.Og; b++) storeShifted(n, i, b, std::min<int64_t>(16, g.Og - b * 16), zeros, c, k);
  }
}

inline void Job::fillPosted(int64_t n) const {
  const int64_t O = g.O;
  if (plainOut()) {
    for (int64_t o = 0; o < O; o++) std::fill_n(y + (n * O + o) * g.OHW, g.OHW, post->apply(0.f, o));
    return;
  }
  for (int64_t ob = 0; ob < O / yl; ob++) {
    float v[16];
    for (int l = 0; l < yl; l++) v[l] = post->apply(0.f, ob * yl + l);
    float* yb = y + (n * (O / yl) + ob) * g.OHW * yl;
    for (int64_t p = 0; p < g.OHW; p++)
      for (int l = 0; l < yl; l++) yb[p * yl + l] = v[l];
  }
}

inline void Job::fillOut(int64_t n) const {
  if (compactOut) {
    // (the kernels write whole 16-lane blocks of selected outputs, zeros past the last one)
    const int64_t from = std::min<int64_t>(g.O, (out->count(n, 0) + 15) / 16 * 16);
    std::memset(y + (n * g.O + from) * g.OHW, 0, (g.O - from) * g.OHW * sizeof(float));
  } else if (post) {
    fillPosted(n);
  } else {
    std::memset(y + n * g.O * g.OHW, 0, g.O * g.OHW * sizeof(float));
  }
}

inline void Job::avx2Chunk(const HeadOperands& h, const Chunk& c, int64_t ob, int halves, int64_t j0, int64_t j1, float* out) const {
#if MSGC_GATHER_AVX512
  const int64_t wshift = ob * h.obShift + c.t0 * 16;
  const int64_t P = halves == 3 ? kAvx2TriplePixels : halves == 2 && c.r == 1 && c.q == kAvx2RowPixels && q7 ? kAvx2RowPixels : kAvx2Pixels;
  // rows per call: a chunk of r > 1 rows has r·q <= kAvx2Pixels; with 3 halves its rows go a few at a time
  const int64_t rr = c.r == 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(c.r, P / c.q));
  const int64_t blocks = c.r > 1 ? 1 : (c.q + P - 1) / P;
  out += c.outPos * yl;
  for (int64_t r0 = 0; r0 < c.r; r0 += rr) {
    const int64_t nr = std::min(rr, c.r - r0);
    for (int64_t b = 0, q0 = 0; b < blocks; b++) {
      const int64_t q = c.r > 1 ? c.q : c.q / blocks + (b < c.q % blocks ? 1 : 0);
      const int e = (b == 0 ? c.edges & 1 : 0) | (b == blocks - 1 ? c.edges & 2 : 0);
      ocvec2KernelFor(rp.pixStride, q, nr, e, halves)(h.chan.data() + j0, h.wch.data() + j0, j1 - j0,
                                                      rp.tapOffset.data() + c.t0, c.nt, wshift,
                                                      c.inPos + r0 * rp.rowStride + q0 * rp.pixStride, rp.rowStride,
                                                      out + (r0 * g.OW + q0) * yl, g.OW, yl, yl == 8 ? 8 * g.OHW : 8,
                                                      h.obShift, j0 > 0);
      q0 += q;
    }
  }
#endif
}

inline int Job::avx2Halves(int64_t ob) const {
  const int64_t B = blocksPerHead();
  const bool merged = triple && yl == 8 && g.Og % 16 == 8 && B >= 2;
  if (merged && ob == B - 1) return 0;
  return merged && ob == B - 2 ? 3 : g.Og - ob * 16 == 8 ? 1 : 2;
}

inline void Job::computeAvx2(int64_t n, int64_t i, int64_t ob, int64_t k, const HeadOperands& h) const {
#if MSGC_GATHER_AVX512
  const int64_t ns = (int64_t)h.chan.size();
  if (!plainOut()) {
    // nChw8c (block ob: 8-channel blocks 2·ob, 2·ob + 1 of the head) or nChw16c, in the halves avx2Halves()
    // gives; avx2Chunk() runs the chunk in near-equal register blocks (the edges: the first block's left one,
    // the last block's right one)
    const Chunk c = chunk(k);
    const int64_t ob0 = allBlocks ? 0 : ob, ob1 = allBlocks ? blocksPerHead() : ob + 1;
    const int64_t groups = g.T == 1 && kBlock > 0 ? (ns + kBlock - 1) / kBlock : 1;
    // each group of selected channels over every block before the next group (allBlocks: the group's input
    // lines stay in L1 while the blocks' weights stream through)
    for (int64_t m = 0, j0 = 0; m < groups; m++) {
      const int64_t j1 = j0 + ns / groups + (m < ns % groups ? 1 : 0);
      for (int64_t b = ob0; b < ob1; b++)
        if (const int halves = avx2Halves(b)) avx2Chunk(h, c, b, halves, j0, j1, headOut(n, i) + b * 16 * g.OHW);
      j0 = j1;
    }
    if (post)
      for (int64_t b = ob0; b < ob1; b++)
        if (const int halves = avx2Halves(b)) postBlocks(n, (i * g.Og + b * 16) / yl, halves * 8 / yl, c, k);
    return;
  }
  const Chunk c = chunk(k);
  const int64_t wshift = ob * h.obShift + c.t0 * 16;
  const Ocvec2Fn kern = ocvec2KernelFor(rp.pixStride, c.q, c.r, c.edges);
  // a head width that is not a multiple of 16: the block's [pixel][16] tile, its valid lanes to plain NCHW
  alignas(64) float tile[kAvx2Pixels * 16];
  kern(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0, c.nt, wshift, c.inPos, rp.rowStride, tile, c.q,
       16, 8, h.obShift, 0);
  const int64_t lanes = std::min<int64_t>(16, g.Og - ob * 16), rowStep = rp.rows == Rows::Direct ? g.OW : 0;
  float* yb = headOut(n, i) + ob * 16 * g.OHW + c.outPos;
  for (int64_t l = 0; l < lanes; l++)
    for (int64_t r = 0; r < c.r; r++)
      for (int64_t q = 0; q < c.q; q++) yb[l * g.OHW + r * rowStep + q] = tile[(r * c.q + q) * 16 + l];
  if (post) postPlain(n, i * g.Og + ob * 16, i * g.Og + ob * 16 + lanes, c, k);
#endif
}

inline void Job::compute(int64_t n, int64_t i, int64_t ob, int64_t k, const HeadOperands& h) const {
#if MSGC_GATHER_AVX512
  setInputPrefetch(inputPrefetch);  // (AVX-512 kernels only)
  setWeightPrefetch(weightPrefetch);
  const int64_t ns = (int64_t)h.chan.size();
  const Chunk c = chunk(k);
  if (out && compactOut && isa == Isa::Avx512) {
    // compacted nChw16c: packed block ob of the selected outputs is output block ob, written in place, its BN
    // (lane l: output osel[l]) applied while it is in L1
    float* ob16 = y + (n * g.O + ob * 16) * g.OHW + c.outPos * 16;
    ocvecKernelFor(rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0, c.nt,
                                                     ob * h.obShift + c.t0 * 16, c.inPos, rp.rowStride, ob16, g.OW);
    if (post) {
      const int64_t lanes = std::min<int64_t>(16, out->count(n, i) - ob * 16);
      const int32_t* osel = out->sel(n, i) + ob * 16;
      alignas(64) float a[16] = {}, b[16] = {};
      for (int64_t l = 0; l < lanes; l++) a[l] = post->a[i * g.Og + osel[l]], b[l] = post->b[i * g.Og + osel[l]];
      postBlock16(ob16, nullptr, c.r, c.q, rowStep(), a, b, post->clamp, post->lo, post->hi, nullptr);
    }
  } else if (out) {
    // packed block ob of the selected outputs: lanes scattered to their channels (either layout)
    alignas(64) float tile[kMaxPixels * 16];
    if (isa == Isa::Avx2)
      ocvec2KernelFor(rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0,
                                                       c.nt, ob * h.obShift + c.t0 * 16, c.inPos, rp.rowStride,
                                                       tile, c.q, 16, 8, h.obShift, 0);
    else
      ocvecKernelFor(rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0,
                                                       c.nt, ob * h.obShift + c.t0 * 16, c.inPos, rp.rowStride,
                                                       tile, c.q);
    const int64_t lanes = std::min<int64_t>(16, out->count(n, i) - ob * 16), rowStep = rp.rows == Rows::Direct ? g.OW : 0;
    const int32_t* osel = out->sel(n, i) + ob * 16;
    if (post) {
      // the BN of the block's lanes (lane l: output osel[l]), on the tile before it is scattered
      alignas(64) float a[16] = {}, b[16] = {};
      for (int64_t l = 0; l < lanes; l++) a[l] = post->a[i * g.Og + osel[l]], b[l] = post->b[i * g.Og + osel[l]];
      if (isa == Isa::Avx2) {
        // the tile's pixels as rows of one pixel, 16 floats apart, per half
        for (int hf = 0; hf < 2; hf++)
          postBlock8(tile + 8 * hf, nullptr, c.r * c.q, 1, 2, a + 8 * hf, b + 8 * hf, post->clamp, post->lo, post->hi, nullptr);
      } else {
        postBlock16(tile, nullptr, 1, c.r * c.q, 0, a, b, post->clamp, post->lo, post->hi, nullptr);
      }
    }
    if (compactOut) {
      // compacted: the packed block is slots ob·16 .. ob·16 + 15 (those past the last selected output hold zeros),
      // whole vectors of the yl-channel blocks rather than a lane at a time
      for (int64_t hf = 0; hf < 16 / yl && ob * 16 + hf * yl < g.O; hf++) {
        float* yb = y + (n * g.O + ob * 16 + hf * yl) * g.OHW + c.outPos * yl;
        for (int64_t r = 0; r < c.r; r++)
          for (int64_t q = 0; q < c.q; q++)
            std::memcpy(yb + (r * rowStep + q) * yl, tile + (r * c.q + q) * 16 + hf * yl, yl * sizeof(float));
      }
      return;
    }
    for (int64_t l = 0; l < lanes; l++) {
      const int64_t o = i * g.Og + osel[l];
      if (plainOut()) {
        float* yb = y + (n * g.O + o) * g.OHW + c.outPos;
        for (int64_t r = 0; r < c.r; r++)
          for (int64_t q = 0; q < c.q; q++) yb[r * rowStep + q] = tile[(r * c.q + q) * 16 + l];
      } else {
        float* yb = y + (n * g.O / yl + o / yl) * g.OHW * yl + c.outPos * yl + o % yl;
        for (int64_t r = 0; r < c.r; r++)
          for (int64_t q = 0; q < c.q; q++) yb[(r * rowStep + q) * yl] = tile[(r * c.q + q) * 16 + l];
      }
    }
  } else if (isa == Isa::Avx2 && kind == KernelKind::Ocvec) {
    computeAvx2(n, i, ob, k, h);
  } else if (kind == KernelKind::Ocvec && (shifted || plainOut())) {
    // a head width that is not a multiple of 16: blocks ob·nb .. ob·nb + nb - 1 into a [block][pixel][16] tile
    // (r·q <= ocvecPixels(nb), so nb·r·q <= kMaxPixels pixels of 16 lanes), whose valid lanes go to nChw16c from
    // inside its blocks (shifted: through the epilogue, with lane masks) or to plain NCHW
    alignas(64) float tile[kMaxPixels * 16];
    const int64_t npx = c.r * c.q, b0 = ob * nb;
    if (!shifted) prefetchResidualPlain(n, i * g.Og + b0 * 16, i * g.Og + std::min<int64_t>(g.Og, (b0 + nb) * 16), c);
    if (nb > 1)
      ocvecNBKernelFor(nb, rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0,
                                                           c.nt, b0 * h.obShift + c.t0 * 16, c.inPos, rp.rowStride,
                                                           tile, c.q, h.obShift, npx * 16);
    else
      ocvecKernelFor(rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0,
                                                       c.nt, b0 * h.obShift + c.t0 * 16, c.inPos, rp.rowStride, tile, c.q);
    const int64_t lanes = std::min<int64_t>(16 * nb, g.Og - b0 * 16), rowStep = rp.rows == Rows::Direct ? g.OW : 0;
    if (shifted) {
      for (int64_t b = 0; b * 16 < lanes; b++)
        storeShifted(n, i, b0 + b, std::min<int64_t>(16, lanes - b * 16), tile + b * npx * 16, c, k);
      return;
    }
    float* yb = headOut(n, i) + b0 * 16 * g.OHW + c.outPos;
    // each block's [pixel][16 lanes] tile transposed into its channels' rows
    for (int64_t b = 0; b * 16 < lanes; b++)
      for (int64_t r = 0; r < c.r; r++) {
        float* dst[16];
        for (int64_t l = 0; l < 16; l++) dst[l] = b * 16 + l < lanes ? yb + (b * 16 + l) * g.OHW + r * rowStep : nullptr;
        transposeRow16(tile + b * npx * 16 + r * c.q * 16, c.q, dst);
      }
    if (post) postPlain(n, i * g.Og + b0 * 16, i * g.Og + b0 * 16 + lanes, c, k);
  } else if (kind == KernelKind::Ocvec && !plainOut() && nb > 1) {
    // blocks ob·nb .. ob·nb + nb - 1 of head i in nChw16c
    float* out = headOut(n, i) + ob * nb * 16 * g.OHW + c.outPos * 16;
    ocvecNBKernelFor(nb, rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data() + c.t0,
                                                         c.nt, ob * nb * h.obShift + c.t0 * 16, c.inPos, rp.rowStride,
                                                         out, g.OW, h.obShift, 16 * g.OHW);
    if (post) postBlocked(n, i * g.Og / 16 + ob * nb, nb, c, k);
  } else if (kind == KernelKind::Ocvec && !plainOut()) {
    // block ob of head i in nChw16c: 16 lanes per pixel
    float* out = headOut(n, i) + ob * 16 * g.OHW + c.outPos * 16;
    ocvecKernelFor(rp.pixStride, c.q, c.r, c.edges)(h.chan.data(), h.wch.data(), ns,
                                                                 rp.tapOffset.data() + c.t0, c.nt,
                                                                 ob * h.obShift + c.t0 * 16, c.inPos, rp.rowStride,
                                                                 out, g.OW);
    if (post) postBlocked(n, i * g.Og / 16 + ob, 1, c, k);
  } else {
    float* yh = headOut(n, i);
    const int64_t VW = pixWidth();
    PixvecFn (*kernelFor)(int, int) = isa == Isa::Avx2 ? pixvec2KernelFor : pixvecKernelFor;
    prefetchResidualPlain(n, i * g.Og, (i + 1) * g.Og, c);
    for (int64_t o = 0; o < g.Og; o += pixMR) {
      const int mr = (int)std::min<int64_t>(pixMR, g.Og - o);
      if (c.r > 1) {  // whole rows of a Direct plan in one register block (plan())
        const int64_t vr = (c.q + VW - 1) / VW;
        kernelFor(mr, (int)(c.r * vr))(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data(), g.T, h.ldw, o, c.inPos,
                                       c.q, yh + o * g.OHW, g.OHW, c.outPos, rp.rowStride, g.OW, vr);
        continue;
      }
      const int nr = std::min<int>(pixNR, pixMaxNR(mr));
      for (int64_t p = 0; p < c.q; p += VW * nr)
        kernelFor(mr, nr)(h.chan.data(), h.wch.data(), ns, rp.tapOffset.data(), g.T, h.ldw, o, c.inPos + p,
                          std::min<int64_t>(VW * nr, c.q - p), yh + o * g.OHW, g.OHW, c.outPos + p, 0, 0, nr);
    }
    if (post) postPlain(n, i * g.Og, (i + 1) * g.Og, c, k);
  }
#endif
}

}  // namespace gather
}  // namespace msgc
