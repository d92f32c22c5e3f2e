// references.ts: float64 reference implementations shared by the test files.

/** float64 reference: y[n, o] = sum_c sum_kk W[o, c] * scale[n, head(o), c] * x[n, c] (zero padded). */
export function msgcConvReference(x: Float32Array, xs: number[], w: Float32Array, ws: number[], s: Float32Array, G: number, stride: number, pad: number): Float64Array {
  const [N, C, H, W] = xs;
  const [O, , kh, kw] = ws;
  const OH = Math.floor((H + 2 * pad - kh) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const y = new Float64Array(N * O * OH * OW);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const head = Math.floor(o / (O / G));
      for (let c = 0; c < C; c++) {
        const sc = s[(n * G + head) * C + c];
        if (sc === 0) continue;
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const wv = w[((o * C + c) * kh + i) * kw + j] * sc;
            for (let oh = 0; oh < OH; oh++) {
              const ih = oh * stride - pad + i;
              if (ih < 0 || ih >= H) continue;
              const yrow = ((n * O + o) * OH + oh) * OW;
              const xrow = ((n * C + c) * H + ih) * W;
              for (let ow = 0; ow < OW; ow++) {
                const iw = ow * stride - pad + j;
                if (iw >= 0 && iw < W) y[yrow + ow] += wv * x[xrow + iw];
              }
            }
          }
      }
    }
  return y;
}

/**
 * float64 adjoint of msgcConvReference: the gradients of sum(y ⊙ gy) with respect to x, w and the scales.
 *   gx[n, c]       = Σ_o Σ_kk W[o, c]·s[n, head(o), c] ⋆ᵀ gy[n, o]
 *   gw[o, c, kk]   = Σ_n s[n, head(o), c]·Σ_p gy[n, o, p]·x[n, c, p + kk]
 *   gs[n, i, c]    = Σ_{o in head i} Σ_kk W[o, c, kk]·Σ_p gy[n, o, p]·x[n, c, p + kk]
 */
export function msgcConvAdjoint(x: Float32Array, xs: number[], w: Float32Array, ws: number[], s: Float32Array, G: number, stride: number, pad: number, gy: Float32Array): { gx: Float64Array; gw: Float64Array; gs: Float64Array } {
  const [N, C, H, W] = xs;
  const [O, , kh, kw] = ws;
  const OH = Math.floor((H + 2 * pad - kh) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const gx = new Float64Array(N * C * H * W);
  const gw = new Float64Array(O * C * kh * kw);
  const gs = new Float64Array(N * G * C);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const head = Math.floor(o / (O / G));
      for (let c = 0; c < C; c++) {
        const sc = s[(n * G + head) * C + c];
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const wi = ((o * C + c) * kh + i) * kw + j;
            let corr = 0; // Σ_p gy[n, o, p]·x[n, c, p + (i, j)]
            for (let oh = 0; oh < OH; oh++) {
              const ih = oh * stride - pad + i;
              if (ih < 0 || ih >= H) continue;
              for (let ow = 0; ow < OW; ow++) {
                const iw = ow * stride - pad + j;
                if (iw < 0 || iw >= W) continue;
                const g = gy[((n * O + o) * OH + oh) * OW + ow];
                const xi = ((n * C + c) * H + ih) * W + iw;
                corr += g * x[xi];
                gx[xi] += g * w[wi] * sc;
              }
            }
            gw[wi] += sc * corr;
            gs[(n * G + head) * C + c] += w[wi] * corr;
          }
      }
    }
  return { gx, gw, gs };
}
