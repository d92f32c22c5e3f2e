#!/usr/bin/env bash
# gpu-pack.sh: packs what a bare GPU machine lacks to build and test msgc's CUDA flavour (run here, on the
# development machine, after `npm ci` and `npx tsc`): this node binary, node_modules, oneDNN (library and
# headers) and Node's N-API headers, compressed into .devpack/ (ignored by git). scripts/gpu-check.sh, run on the
# GPU machine with .devpack and dist carried along, unpacks them, builds with CUDA and cuDNN, runs the tests and
# the GPU benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .devpack && mkdir -p .devpack/node-include
xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > .devpack/node.xz
tar cf - node_modules | xz -T0 -6 > .devpack/node_modules.tar.xz
inc="$(node -p "require('path').join(process.config.variables.node_prefix || '/usr', 'include', 'node')")"
[ -f "$inc/node_api.h" ] || inc=/usr/include/node
cp "$inc"/node_api.h "$inc"/node_api_types.h "$inc"/js_native_api.h "$inc"/js_native_api_types.h .devpack/node-include/
dnnl="$(readlink -f /usr/lib/x86_64-linux-gnu/libdnnl.so)"
mkdir -p /tmp/dnnlpack/lib /tmp/dnnlpack/include
cp "$dnnl" /tmp/dnnlpack/lib/ && (cd /tmp/dnnlpack/lib && ln -sf "$(basename "$dnnl")" libdnnl.so.2 && ln -sf libdnnl.so.2 libdnnl.so)
# Debian's oneDNN needs libOpenCL.so.1, which a CUDA image may lack (the ICD loader only; no OpenCL device is used)
ocl="$(ldconfig -p | awk '/libOpenCL\.so\.1 /{print $NF; exit}')"
[ -n "$ocl" ] && cp "$(readlink -f "$ocl")" /tmp/dnnlpack/lib/libOpenCL.so.1
cp -r /usr/include/oneapi /tmp/dnnlpack/include/ && cp /usr/include/dnnl*.h* /tmp/dnnlpack/include/
tar cf - -C /tmp/dnnlpack lib include | xz -T0 -6 > .devpack/dnnl.tar.xz
rm -rf /tmp/dnnlpack
du -sh .devpack/*
