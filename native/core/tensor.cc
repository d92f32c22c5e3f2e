// tensor.cc: storage and tensor lifetime, live counts, creation helpers.
#include <atomic>
#include <cstdlib>
#include <limits>
#include <cstring>
#include <sstream>

#include "msgc/cuda.h"
#include "msgc/errors.h"
#include "msgc/tensor.h"
#include "msgc/parallel.h"

namespace msgc {
namespace {
std::atomic<int64_t> gLiveTensors{0};
}

const char* deviceName(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

std::string shapeString(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); i++) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shapeNumel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

static std::atomic<uint64_t> nextStorageId{1};

Storage::Storage(size_t bytes_, Device device_) : bytes(bytes_), device(device_), id(nextStorageId++) {
  if (device == Device::CUDA) {
    MSGC_CHECK(cuda::available(), "cuda: not available: ", cuda::unavailableReason());
    data = static_cast<float*>(cuda::allocDevice(bytes));
    return;
  }
  data = static_cast<float*>(allocHost(bytes));
  // MSGC_POISON=1 fills new buffers with NaN so that reads of unwritten memory show up in tests
  static const bool poison = std::getenv("MSGC_POISON") != nullptr;
  if (poison)
    for (size_t i = 0; i < bytes / sizeof(float); i++) data[i] = std::numeric_limits<float>::quiet_NaN();
}

Storage::~Storage() {
  if (device == Device::CUDA)
    cuda::freeDevice(data, bytes);
  else
    freeHost(data, bytes);
}

Tensor::Tensor(Shape s, std::shared_ptr<Storage> st, std::shared_ptr<const Layout> l)
    : shape(std::move(s)), storage(std::move(st)), layout(std::move(l)) {
  gLiveTensors++;
}

Tensor::~Tensor() { gLiveTensors--; }

int64_t liveTensorCount() { return gLiveTensors.load(); }

TensorPtr emptyTensor(const Shape& shape, Device device) {
  for (int64_t d : shape) MSGC_CHECK(d >= 0, "tensor: negative dimension in shape ", shapeString(shape));
  int64_t n = shapeNumel(shape);
  MSGC_CHECK(n <= (int64_t(1) << 40), "tensor: shape ", shapeString(shape), " is too large");
  auto st = std::make_shared<Storage>((size_t)n * sizeof(float), device);
  return std::make_shared<Tensor>(shape, st);
}

TensorPtr fullTensor(const Shape& shape, float value, Device device) {
  TensorPtr t = emptyTensor(shape, device);
  if (device == Device::CUDA) {
    cuda::fill(t->data(), t->numel(), value);
    return t;
  }
  float* p = t->data();
  int64_t n = t->numel();
  parallelForSimd(n, n > 65536, [&](int64_t i) { p[i] = value; });
  return t;
}

TensorPtr zerosTensor(const Shape& shape, Device device) { return fullTensor(shape, 0.f, device); }

TensorPtr fromHost(const float* src, const Shape& shape) {
  TensorPtr t = emptyTensor(shape);
  std::memcpy(t->data(), src, (size_t)t->numel() * sizeof(float));
  return t;
}

}  // namespace msgc
