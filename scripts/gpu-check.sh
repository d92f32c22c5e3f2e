#!/usr/bin/env bash
# gpu-check.sh: on a GPU machine with no network (the device tool's), builds msgc's CUDA flavour and checks it:
# unpacks .devpack (scripts/gpu-pack.sh), finds the CUDA toolkit and cuDNN (a system install, or the nvidia-cudnn
# wheel of the machine's Python), configures CMake directly (cmake-js would download Node's headers), builds,
# runs the CUDA tests and a few CPU suites, bench/cuda_ops.js,
# memcheck and racecheck on scripts/cuda-smoke.js, whole models on the GPU (bench/models.js --device
# cuda), and Nsight Compute on scripts/cuda-profile.js. Logs and results go to $OUT (or ./gpu-out), at most 8 files
# (build.log, jest.log, cuda_ops.txt/.json, memcheck.log, models-cuda.txt/.json, ncu.txt). About 5-6 minutes on
# an H200 without the CPU suites (--gpu-tests-only), 7-8 with them.
# Usage: bash scripts/gpu-check.sh [--no-bench] [--gpu-tests-only] [--no-profile] [--b32-models] [--no-variants]
#   [--bench-args "..."]  (--no-variants: only the default kernels, not the forced ones or TF32)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
bench=1
cpuSuites=1
profile=1
variants=1
benchArgs="--reps 3"
models="resnet18 1 224|resnet18 32 224|resnet50 1 224|resnet50 32 224|mobilenetv2 1 224|mobilenetv2 32 224|resnet20 32 32"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bench) bench=0 ;;
    --gpu-tests-only) cpuSuites=0 ;;
    --no-profile) profile=0 ;;
    --b32-models) models="resnet18 32 224|resnet50 32 224|mobilenetv2 32 224" ;;
    --no-variants) variants=0 ;;
    --bench-args) benchArgs="$2"; shift ;;
  esac
  shift
done
log() { echo "== $(date +%T) $*"; }
T=/tmp/msgc-gpu && mkdir -p $T/bin $T/dnnl
log "unpack"
python3 - <<'PY'
import lzma, shutil, tarfile, os
with lzma.open('.devpack/node.xz') as f, open('/tmp/msgc-gpu/bin/node', 'wb') as o: shutil.copyfileobj(f, o)
os.chmod('/tmp/msgc-gpu/bin/node', 0o755)
tarfile.open('.devpack/node_modules.tar.xz').extractall('.')
tarfile.open('.devpack/dnnl.tar.xz').extractall('/tmp/msgc-gpu/dnnl')
PY
export PATH=$T/bin:$PATH
log "node $(node --version); $(nvcc --version | tail -1); $(cmake --version | head -1); $(g++ --version | head -1)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || true
# cuDNN: the machine's Python wheels (nvidia-cudnn-*: headers and libraries under site-packages/nvidia/...), else a
# system install; every folder of the wheels that holds shared libraries goes on LD_LIBRARY_PATH (cuDNN loads its
# sub-libraries, and cuBLAS for some engines, at run time)
nvroot=$(python3 -c "import nvidia; print(' '.join(nvidia.__path__))" 2>/dev/null)
cudnnHeader=$(find $nvroot /usr/include /usr/local/cuda/include -name cudnn.h 2>/dev/null | head -1)
cudnnLib=$(find $nvroot /usr/lib /usr/local/cuda -name "libcudnn.so*" 2>/dev/null | sort | head -1)
libdirs=$(find $nvroot -name "*.so*" -printf "%h\n" 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}$T/dnnl/lib:${LD_LIBRARY_PATH:-}"
log "cuDNN header '${cudnnHeader}', library '${cudnnLib}'"
cudnnArgs=()
[ -n "$cudnnHeader" ] && [ -n "$cudnnLib" ] && cudnnArgs=(-DCUDNN_INCLUDE_DIR="$(dirname "$cudnnHeader")" -DCUDNN_LIBRARY="$cudnnLib")
build() {
  rm -rf build && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC="$PWD/.devpack/node-include" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/build/Release" -DDNNL_INCLUDE_DIR="$T/dnnl/include" \
    -DDNNL_LIBRARY="$T/dnnl/lib/libdnnl.so" -DMSGC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 "$@" &&
    cmake --build build -j "$(nproc)"
}
log "build"
if ! build "${cudnnArgs[@]}" > "$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40
  log "build with cuDNN failed; building without it"
  build -DMSGC_CUDNN=OFF > "$OUT/build-nocudnn.log" 2>&1 || { tail -40 "$OUT/build-nocudnn.log"; exit 1; }
fi
grep -E "^-- msgc|msgc: |\.cuh?\([0-9]+\)" "$OUT/build.log" | head -20
cp "$T/dnnl/lib/"libdnnl.so* build/Release/ 2>/dev/null
node -e "const m=require('./dist'); console.log(JSON.stringify(m.backendInfo()))" 2>&1 | tee -a "$OUT/build.log"
ldd build/Release/*.node | grep -E "not found|dnnl|cudnn|OpenCL" || true
# the direct kernel's machine code (its 16 × 128-pixel, 3xTF32 instance, ResNet-18's layer1 at batch 32):
# the opcode counts and the kernel-offset loop (from its first to its last HMMA), appended to build.log
if command -v cuobjdump > /dev/null; then
  cuobjdump -sass build/Release/msgc.node 2>/dev/null |
    awk '/Function : .*msgcDirectKernel.*DirectConfigILi16ELi128EEELb1E/{f=1; next} f && /Function :/{f=0} f' > /tmp/msgc-sass.txt
  {
    echo "== SASS of msgcDirectKernel<16, 128, 3xTF32>: $(grep -c '/\*[0-9a-f]*\*/ ' /tmp/msgc-sass.txt) lines; opcodes:"
    sed -nE 's#^\s*/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T] )?([A-Z0-9_]+).*#\2#p' /tmp/msgc-sass.txt | sort | uniq -c | sort -rn | head -30
    echo "== the loop over kernel offsets (first to last HMMA)"
    first=$(grep -n HMMA /tmp/msgc-sass.txt | head -1 | cut -d: -f1); last=$(grep -n HMMA /tmp/msgc-sass.txt | tail -1 | cut -d: -f1)
    [ -n "$first" ] && sed -n "$((first - 60)),$((last + 10))p" /tmp/msgc-sass.txt | sed -E 's@/\* 0x[0-9a-f]+ \*/@@'
  } >> "$OUT/build.log"
fi
log "tests"
suites="test/cuda.test.ts"
[ "$cpuSuites" = 1 ] && suites="$suites test/msgc_conv.test.ts test/msgc_bn_fused.test.ts test/conv.test.ts"
timeout 240 node node_modules/jest/bin/jest.js $suites 2>&1 | tee "$OUT/jest.log" | grep -vE "^\s+at |^$" | tail -80
if [ "$bench" = 1 ]; then
  log "bench"
  timeout 150 node bench/cuda_ops.js $benchArgs 2>&1 | tee "$OUT/cuda_ops.txt" | tail -22
  cp bench/results/cuda_ops.json "$OUT/" 2>/dev/null
  # the WMMA kernel (the direct kernel's fallback), the FMA tile kernel (the default before compute capability
  # 8.0), then TF32 allowed in both the tensor-core kernel and the cuDNN baseline (PyTorch's default for cuDNN convs), each appended to cuda_ops.txt
  [ "$variants" = 1 ] && for v in "MSGC_CUDA_KERNEL=mma" "MSGC_CUDA_KERNEL=tile" "MSGC_CUDA_TF32=1"; do
    log "bench: $v, appended to cuda_ops.txt"
    echo "== $v" >> "$OUT/cuda_ops.txt"
    env $v timeout 150 node bench/cuda_ops.js $benchArgs 2>&1 | tee -a "$OUT/cuda_ops.txt" | tail -12
  done
  log "cuda-probe (the direct kernel's copies and products timed apart), appended to cuda_ops.txt"
  timeout 60 node scripts/cuda-probe.js 2>&1 | tee -a "$OUT/cuda_ops.txt" | tail -6
  # the sanitizers after the op benchmark, before the model benchmarks (they matter more than model timings)
  if command -v compute-sanitizer > /dev/null; then
    log "memcheck (scripts/cuda-smoke.js)"
    timeout 120 compute-sanitizer --tool memcheck --leak-check no node scripts/cuda-smoke.js 2>&1 | tee "$OUT/memcheck.log" | tail -15
    for k in mma tile; do
      log "memcheck, MSGC_CUDA_KERNEL=$k"
      MSGC_CUDA_KERNEL=$k timeout 90 compute-sanitizer --tool memcheck --leak-check no node scripts/cuda-smoke.js 2>&1 | tee -a "$OUT/memcheck.log" | tail -1
    done
    log "racecheck (shared memory hazards in our kernels)"
    timeout 90 compute-sanitizer --tool racecheck node scripts/cuda-smoke.js 2>&1 | tee -a "$OUT/memcheck.log" | tail -6
  fi
  log "models on the GPU (density 0.5)"
  IFS='|' read -ra modelList <<< "$models"
  for m in "${modelList[@]}"; do
    set -- $m
    timeout 50 node bench/models.js --model "$1" --batch "$2" --size "$3" --density 0.5 --reps 3 --device cuda 2>&1 | tee -a "$OUT/models-cuda.txt" | tail -3
  done
  node -e "const fs=require('fs');const d='bench/results';fs.writeFileSync(process.argv[1],JSON.stringify(fs.readdirSync(d).filter(f=>/-cuda\.json$/.test(f)).map(f=>JSON.parse(fs.readFileSync(d+'/'+f))),null,2))" "$OUT/models-cuda.json"
  # batch 32 with the WMMA kernel, and with TF32 allowed (appended to models-cuda.txt)
  [ "$variants" = 1 ] && for v in "MSGC_CUDA_KERNEL=mma" "MSGC_CUDA_TF32=1"; do
    for m in "resnet18 32 224" "resnet50 32 224"; do
      set -- $m
      echo "($v)" >> "$OUT/models-cuda.txt"
      env $v timeout 50 node bench/models.js --model "$1" --batch "$2" --size "$3" --density 0.5 --reps 3 --device cuda 2>&1 | tee -a "$OUT/models-cuda.txt" | tail -1
    done
  done
fi
if [ "$profile" = 1 ] && command -v ncu > /dev/null; then
  # where the MSGC kernels' time goes (the layers where they trail cuDNN most; scripts/cuda-profile.js): throughput
  # against the chip's peaks, occupancy, warp stall reasons, memory traffic; both calls of each kernel
  log "Nsight Compute on scripts/cuda-profile.js"
  timeout 240 ncu --clock-control none --kernel-name regex:"msgc(Conv|Mma|Direct)Kernel" --launch-count 8 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats --section SchedulerStats --section InstructionStats --section SourceCounters \
    node scripts/cuda-profile.js > "$OUT/ncu.txt" 2>&1
  grep -E "^  [a-zA-Z_].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|L1/TEX Hit|L2 Hit|Stall" "$OUT/ncu.txt" | head -80
fi
log "done"
