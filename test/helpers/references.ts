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
