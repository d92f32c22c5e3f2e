// msgc_layers.js: the MSGC layer shapes the op benchmarks time (msgc_ops.js on the CPU, cuda_ops.js on the GPU):
// ResNet-18's second 3×3 conv of each block, ResNet-50's bottleneck 3×3 convs, MobileNetV2's projection 1×1 convs,
// at 224² input (H is the output size; the input is H·stride), and seeded random binary gates.
'use strict';

function resnet18() {
  return [[64, 56], [128, 28], [256, 14], [512, 7]].map(([P, H], s) => ({
    net: 'resnet18', name: `layer${s + 1}.x.conv2`, C: P, O: P, H, k: 3, stride: 1, pad: 1,
  }));
}

function resnet50() {
  const out = [];
  let H = 56;
  [64, 128, 256, 512].forEach((width, s) => {
    if (s > 0) {
      H /= 2;
      out.push({ net: 'resnet50', name: `layer${s + 1}.0.conv2`, C: width, O: width, H, k: 3, stride: 2, pad: 1 });
    }
    out.push({ net: 'resnet50', name: `layer${s + 1}.${s > 0 ? 'x' : '0-2'}.conv2`, C: width, O: width, H, k: 3, stride: 1, pad: 1 });
  });
  return out;
}

function mobilenetV2() {
  const out = [];
  const seen = new Set();
  let H = 112;
  let inp = 32;
  [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]].forEach(([t, c, n, s], b) => {
    for (let i = 0; i < n; i++) {
      const Ho = i === 0 && s === 2 ? H / 2 : H;
      const hid = inp * t;
      const key = `${hid},${c},${Ho}`;
      if (!seen.has(key)) {
        seen.add(key);
        out.push({ net: 'mobilenetv2', name: `features.${b}.${i}.project`, C: hid, O: c, H: Ho, k: 1, stride: 1, pad: 0 });
      }
      H = Ho;
      inp = c;
    }
  });
  return out;
}

/** Bernoulli(density) gates [N, G, C] from a seeded LCG; returns the data and the measured density. */
function gates(N, G, C, density, seed) {
  let s = seed >>> 0 || 1;
  const v = new Float32Array(N * G * C);
  let open = 0;
  for (let i = 0; i < v.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    if (s / 4294967296 < density) {
      v[i] = 1;
      open++;
    }
  }
  return { v, measured: open / v.length };
}

/** Every layer above, or one net's ('resnet18', 'resnet50', 'mobilenetv2') when `net` is given. */
function layers(net = null) {
  const all = [...resnet18(), ...resnet50(), ...mobilenetV2()];
  return net ? all.filter((s) => s.net === net) : all;
}

module.exports = { resnet18, resnet50, mobilenetV2, layers, gates };
