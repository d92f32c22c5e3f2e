// device.ts: the GPU as users see it: whether it is there, which one, and waiting for its queued work.
import { CudaInfo, native } from '../native';

export const cuda = {
  /** Whether this binary has the CUDA backend and a GPU is usable now. */
  isAvailable(): boolean {
    return native.cudaInfo().available;
  },
  /** The binary's CUDA support, the GPU and the library versions; `reason` says why cuda is unavailable. */
  info(): CudaInfo {
    return native.cudaInfo();
  },
  /**
   * Waits until the GPU has finished the work queued so far (ops on cuda return as soon as their kernels are
   * queued). Benchmarks need it; reading values (toFloat32Array, item) waits by itself. An error of an earlier
   * kernel is thrown here.
   */
  synchronize(): void {
    native.cudaSynchronize();
  },
};
