// layout.cc: conversions between plain and blocked tensors (see layout.h).
#include <dnnl.h>

#include "layout.h"  // (and prim_cache.h)

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "msgc/errors.h"
#include "msgc/parallel.h"

namespace msgc {
namespace cpu {

dnnl::engine& engine() {
  static dnnl::engine* e = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *e;
}

dnnl::stream& stream() {
  static dnnl::stream* s = new dnnl::stream(engine());
  return *s;
}

Dims toDims(const Shape& s) { return Dims(s.begin(), s.end()); }

dnnl::memory::desc plainDesc(const Dims& dims) {
  Dims strides(dims.size());
  int64_t st = 1;
  for (int i = (int)dims.size() - 1; i >= 0; i--) {
    strides[i] = st;
    st *= dims[i] > 0 ? dims[i] : 1;
  }
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
}

std::string descKey(const dnnl::memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  Key k;
  k.add(d.ndims, (int)d.data_type, (int)d.format_kind);
  for (int i = 0; i < d.ndims; i++) k.add((int64_t)d.dims[i], (int64_t)d.padded_dims[i], (int64_t)d.padded_offsets[i]);
  if (d.format_kind == dnnl_blocked) {
    const auto& b = d.format_desc.blocking;
    for (int i = 0; i < d.ndims; i++) k.add((int64_t)b.strides[i]);
    k.add(b.inner_nblks);
    for (int i = 0; i < b.inner_nblks; i++) k.add((int64_t)b.inner_blks[i], (int64_t)b.inner_idxs[i]);
  }
  k.add((int64_t)d.offset0, (int)d.extra.flags);
  return k.str();
}

dnnl::memory::desc currentDesc(const Tensor& t, const Dims& dims) {
  if (!t.layout) return plainDesc(dims);
  if (t.layout->md.dims() == dims) return t.layout->md;
  return dnnl::memory::desc();
}

dnnl::memory memoryOf(const Tensor& t) {
  dnnl::memory::desc md = t.layout ? t.layout->md : plainDesc(toDims(t.shape));
  return dnnl::memory(md, engine(), t.data());
}

static std::shared_ptr<Storage> derivedCopy(const Tensor& t, const dnnl::memory::desc& want) {
  std::string key = descKey(want);
  auto& cache = t.storage->derived;
  auto it = cache.find(key);
  if (it != cache.end() && it->second.version == t.storage->version) return it->second.copy;
  dnnl::memory::desc have = currentDesc(t, want.dims());
  std::shared_ptr<Storage> copy = std::make_shared<Storage>(want.get_size(), t.device());
  dnnl::memory dst(want, engine(), copy->data);
  SingleThreaded one(t.numel() < smallOpElements);
  if (!have) {
    // blocked with different dims: go through the plain layout of the tensor's own dims first
    const float* plain = plainData(t);
    dnnl::memory src(plainDesc(want.dims()), engine(), const_cast<float*>(plain));
    dnnl::reorder(src, dst).execute(stream(), src, dst);
  } else {
    dnnl::memory src(have, engine(), t.data());
    dnnl::reorder(src, dst).execute(stream(), src, dst);
  }
  stream().wait();
  cache[key] = Storage::Derived{t.storage->version, copy};
  return copy;
}

dnnl::memory asLayout(const Tensor& t, const dnnl::memory::desc& want) {
  dnnl::memory::desc have = currentDesc(t, want.dims());
  if (have && have == want) return dnnl::memory(want, engine(), t.data());
  std::shared_ptr<Storage> copy = derivedCopy(t, want);
  return dnnl::memory(want, engine(), copy->data);
}

std::shared_ptr<Storage> plainStorage(const Tensor& t) {
  if (!t.layout) return t.storage;
  Dims dims = t.layout->md.dims();
  dnnl::memory::desc want = plainDesc(dims);
  std::string key = descKey(want);
  auto& cache = t.storage->derived;
  auto it = cache.find(key);
  if (it != cache.end() && it->second.version == t.storage->version) return it->second.copy;
  std::shared_ptr<Storage> copy = std::make_shared<Storage>(want.get_size(), t.device());
  dnnl::memory src(t.layout->md, engine(), t.data());
  dnnl::memory dst(want, engine(), copy->data);
  SingleThreaded one(t.numel() < smallOpElements);
  dnnl::reorder(src, dst).execute(stream(), src, dst);
  stream().wait();
  cache[key] = Storage::Derived{t.storage->version, copy};
  return copy;
}

const float* plainData(const Tensor& t) { return plainStorage(t)->data; }

TensorPtr tensorWithDesc(const Shape& shape, const dnnl::memory::desc& md) {
  // a rank-0 desc reports size 0: never allocate less than the logical elements
  size_t bytes = std::max(md.get_size(), (size_t)shapeNumel(shape) * sizeof(float));
  auto st = std::make_shared<Storage>(bytes, Device::CPU);
  std::shared_ptr<const Layout> layout;
  if (md != plainDesc(md.dims())) layout = std::make_shared<const Layout>(md);
  return std::make_shared<Tensor>(shape, st, layout);
}

int64_t channelBlock(const Tensor& t) {
  if (t.dim() != 4) return 0;
  if (!t.layout) return 1;
  Dims d = toDims(t.shape);
  const dnnl::memory::desc& md = t.layout->md;
  if (md == dnnl::memory::desc(d, dnnl::memory::data_type::f32, dnnl::memory::format_tag::aBcd16b)) return 16;
  if (md == dnnl::memory::desc(d, dnnl::memory::data_type::f32, dnnl::memory::format_tag::aBcd8b)) return 8;
  return 0;
}

dnnl::memory::desc blockedDesc(const Shape& s, int64_t block) {
  if (block == 1) return plainDesc(toDims(s));
  return dnnl::memory::desc(toDims(s), dnnl::memory::data_type::f32,
                            block == 16 ? dnnl::memory::format_tag::aBcd16b : dnnl::memory::format_tag::aBcd8b);
}

int64_t nativeChannelBlock() {
  static const int64_t block = dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core ? 16 : 8;
  return block;
}

void reorderInto(const Tensor& src, Tensor& dst) {
  dnnl::memory d = memoryOf(dst);
  dnnl::memory s = asLayout(src, d.get_desc());
  if (s.get_data_handle() != d.get_data_handle()) {
    SingleThreaded one(src.numel() < smallOpElements);
    dnnl::reorder(s, d).execute(stream(), s, d);
    stream().wait();
  }
  dst.storage->touch();
}

namespace {
// C = alpha·op(A)·op(B) + beta·C for small products, on this thread. oneDNN's sgemm costs ~10 µs a call whatever
// the size (its dispatch and threading; 2 threads here), which dominated the gate heads' GEMMs: ResNet-20's
// [32, 16] x [16, 4] and [32, 4] x [4, 64] took 30 µs a head forward and 42 backward for a few thousand
// multiply-adds.
void smallGemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // op(B) as K contiguous rows of N (a transposed B is copied: K·N floats against M·N·K multiply-adds), so that
  // every row of C accumulates alpha·a(i, p)·op(B)[p, :] over p, vectorized over j
  const float* rows = B;
  int64_t ldr = ldb;
  if (tb == 'T' || tb == 't') {
    static thread_local std::vector<float> packed;
    if ((int64_t)packed.size() < K * N) packed.resize(K * N);
    for (int64_t j = 0; j < N; j++)
      for (int64_t p = 0; p < K; p++) packed[p * N + j] = B[j * ldb + p];
    rows = packed.data();
    ldr = N;
  }
  const bool at = ta == 'T' || ta == 't';
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    if (beta == 0.f)
      for (int64_t j = 0; j < N; j++) c[j] = 0.f;
    else if (beta != 1.f)
      for (int64_t j = 0; j < N; j++) c[j] *= beta;
    for (int64_t p = 0; p < K; p++) {
      const float a = alpha * (at ? A[p * lda + i] : A[i * lda + p]);
      const float* b = rows + p * ldr;
#pragma omp simd
      for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
    }
  }
}

// smallGemm's loop runs over C's rows and, for each p, over the row's N columns: with a narrow C (a gate head's
// hidden width of 4-40 units against 32-64 samples) that inner loop is a vector or two and the rest is overhead.
// The transpose Cᵀ = op(B)ᵀ·op(A)ᵀ has N rows of M columns, so when that costs less (estimated per row and p:
// loop overhead plus two operations per 4 columns, and the copies) it is computed into a buffer and copied back.
// Every element still sums beta·C and its products over p in the same order: the same bits for alpha = 1, which
// every caller passes. A gate head's training pass (ResNet-20's 16- and 32-channel contexts, batch 64) went from
// 12 + 37 to 10 + 16 µs and from 20 + 79 to 15 + 40 µs (forward + backward, alone).
void smallGemmEitherWay(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                        const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const auto T = [](char t) { return t == 'T' || t == 't'; };
  const int64_t direct = M * K * (6 + (N + 3) / 4 * 2) + (T(tb) ? K * N : 0);
  const int64_t flipped = N * K * (6 + (M + 3) / 4 * 2) + (beta != 0.f ? 3 : 2) * M * N + (T(ta) ? 0 : M * K);
  const char* e = std::getenv("MSGC_SMALL_GEMM_TRANSPOSE");  // 0: never (for A/B measurements)
  if (flipped >= direct || (e && *e == '0')) {
    smallGemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  static thread_local std::vector<float> ct;
  if ((int64_t)ct.size() < N * M) ct.resize(N * M);
  const auto flip = [&](char t) { return T(t) ? 'N' : 'T'; };
  if (beta != 0.f)  // (Cᵀ starts from C, scaled inside as the direct loop does)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) ct[j * M + i] = C[i * ldc + j];
  smallGemm(flip(tb), flip(ta), N, M, K, alpha, B, ldb, A, lda, beta, ct.data(), M);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = ct[j * M + i];
}
}  // namespace

void sgemm(const char* op, char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M * N * K <= (int64_t(1) << 16) && M > 0 && N > 0) {
    smallGemmEitherWay(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  dnnl_status_t st;
  {
    ScopedBlockSignals hold;
    st = dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  MSGC_CHECK(st == dnnl_success, op, ": sgemm failed with status ", (int)st);
}

bool runsJitGemm(const dnnl::primitive_desc_base& pd) {
  const char* impl = pd.impl_info_str();
  return impl && std::string(impl).find("gemm") != std::string::npos;
}

size_t primitiveCacheCapacity() {
  static const size_t cap = [] {
    const char* e = std::getenv("MSGC_PRIMITIVE_CACHE_CAPACITY");
    if (e && *e) {
      char* end = nullptr;
      const long long v = std::strtoll(e, &end, 10);
      if (end && *end == 0 && v >= 1) return (size_t)v;
    }
    return (size_t)1024;
  }();
  return cap;
}

namespace {
std::atomic<int64_t> gPrimitiveCacheEntries{0};
}
int64_t primitiveCacheEntries() { return gPrimitiveCacheEntries.load(); }
void countPrimitiveCacheEntries(int64_t delta) { gPrimitiveCacheEntries += delta; }

}  // namespace cpu
}  // namespace msgc
