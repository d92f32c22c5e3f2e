// shapes.js: the convolution shapes of ResNet-18 (224² and the 32² small-input variant) and MobileNetV2 (224²),
// deduplicated, as { name, N, C, H, W, K, k, stride, pad, groups }.
'use strict';

function resnet18(input, batch) {
  const small = input <= 64;
  const out = [];
  let H = input;
  if (small) {
    out.push({ name: 'stem3x3', C: 3, H, K: 64, k: 3, stride: 1, pad: 1, groups: 1 });
  } else {
    out.push({ name: 'conv1', C: 3, H, K: 64, k: 7, stride: 2, pad: 3, groups: 1 });
    H = Math.floor((H + 6 - 7) / 2) + 1;
    H = Math.floor((H + 2 - 3) / 2) + 1; // max-pool
  }
  let C = 64;
  [64, 128, 256, 512].forEach((P, stage) => {
    const s = stage === 0 ? 1 : 2;
    const Ho = Math.floor((H + 2 - 3) / s) + 1;
    out.push({ name: `layer${stage + 1}.0.conv1`, C, H, K: P, k: 3, stride: s, pad: 1, groups: 1 });
    out.push({ name: `layer${stage + 1}.x.conv`, C: P, H: Ho, K: P, k: 3, stride: 1, pad: 1, groups: 1 });
    if (s !== 1 || C !== P) out.push({ name: `layer${stage + 1}.0.downsample`, C, H, K: P, k: 1, stride: s, pad: 0, groups: 1 });
    C = P;
    H = Ho;
  });
  return out.map((s) => ({ ...s, N: batch, W: s.H, net: small ? `resnet18-${input}` : 'resnet18-224' }));
}

function mobilenetV2(batch) {
  const out = [];
  let H = 224;
  out.push({ name: 'stem', C: 3, H, K: 32, k: 3, stride: 2, pad: 1, groups: 1 });
  H = 112;
  let inp = 32;
  const cfg = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];
  cfg.forEach(([t, c, n, s], b) => {
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      const hid = inp * t;
      const tag = `block${b}.${i}`;
      if (t !== 1) out.push({ name: `${tag}.expand`, C: inp, H, K: hid, k: 1, stride: 1, pad: 0, groups: 1 });
      const Ho = Math.floor((H + 2 - 3) / stride) + 1;
      out.push({ name: `${tag}.dw`, C: hid, H, K: hid, k: 3, stride, pad: 1, groups: hid });
      out.push({ name: `${tag}.project`, C: hid, H: Ho, K: c, k: 1, stride: 1, pad: 0, groups: 1 });
      H = Ho;
      inp = c;
    }
  });
  out.push({ name: 'last1x1', C: 320, H, K: 1280, k: 1, stride: 1, pad: 0, groups: 1 });
  return out.map((s) => ({ ...s, N: batch, W: s.H, net: 'mobilenetv2-224' }));
}

function dedupe(list) {
  const seen = new Set();
  return list.filter((s) => {
    const key = [s.net, s.N, s.C, s.H, s.W, s.K, s.k, s.stride, s.pad, s.groups].join(',');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** FLOPs (2 per MAC) of one forward pass; backward-data and backward-weights cost the same. */
function flops(s) {
  const OH = Math.floor((s.H + 2 * s.pad - s.k) / s.stride) + 1;
  const OW = Math.floor((s.W + 2 * s.pad - s.k) / s.stride) + 1;
  return 2 * s.N * s.K * OH * OW * (s.C / s.groups) * s.k * s.k;
}

module.exports = { resnet18, mobilenetV2, dedupe, flops };
