// errors.h: the exception type every native check throws; the N-API layer turns it into a JavaScript Error.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace msgc {

struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void appendAll(std::ostringstream&) {}
template <typename T, typename... Rest>
void appendAll(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  appendAll(os, rest...);
}
}  // namespace detail

// Builds a message from its pieces: fail("conv2d: weight has ", n, " dims, expected 4").
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  detail::appendAll(os, parts...);
  throw Error(os.str());
}

#define MSGC_CHECK(cond, ...)         \
  do {                                \
    if (!(cond)) ::msgc::fail(__VA_ARGS__); \
  } while (0)

}  // namespace msgc
