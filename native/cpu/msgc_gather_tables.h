// msgc_gather_tables.h: dispatch tables over the ocvec kernel templates, shared by the AVX-512 kernels
// (msgc_gather_kernels.cc) and the AVX2 ones (msgc_gather_avx2.cc). K<Q, R, S, E>::fn names one instantiation (Q
// pixels, R rows, pixels S apart, padding edges E); the tables index it by pixels and rows, or by pixels alone for
// kernels of one output row.
#pragma once
#include <array>
#include <utility>

#include "msgc_gather.h"

namespace msgc {
namespace gather {

// table[(Q - 1) * kMaxRows + R - 1] for R <= Rows(Q) (other entries repeat R = 1 and are never used)
template <class Fn, template <int, int, int, int> class K, int (*Rows)(int), int S, int E, size_t... I>
constexpr std::array<Fn, sizeof...(I)> pixelRowTable(std::index_sequence<I...>) {
  return {K<(int)(I / kMaxRows) + 1,
            ((int)(I % kMaxRows) + 1 <= Rows((int)(I / kMaxRows) + 1) ? (int)(I % kMaxRows) + 1 : 1), S, E>::fn...};
}
// the same for every edge variant: tables[E], Q <= P
template <class Fn, template <int, int, int, int> class K, int P, int (*Rows)(int), int S>
constexpr std::array<std::array<Fn, P * kMaxRows>, 4> pixelRowTables() {
  constexpr auto i = std::make_index_sequence<P * kMaxRows>{};
  return {pixelRowTable<Fn, K, Rows, S, 0>(i), pixelRowTable<Fn, K, Rows, S, 1>(i),
          pixelRowTable<Fn, K, Rows, S, 2>(i), pixelRowTable<Fn, K, Rows, S, 3>(i)};
}

// one output row (a blocked x read in place), every edge variant: table[E][Q - 1] for Q <= P
template <class Fn, template <int, int, int, int> class K, int S, int E, size_t... I>
constexpr std::array<Fn, sizeof...(I)> oneRowTable(std::index_sequence<I...>) {
  return {K<(int)I + 1, 1, S, E>::fn...};
}
template <class Fn, template <int, int, int, int> class K, int P, int S>
constexpr std::array<std::array<Fn, P>, 4> oneRowTables() {
  constexpr auto i = std::make_index_sequence<P>{};
  return {oneRowTable<Fn, K, S, 0>(i), oneRowTable<Fn, K, S, 1>(i), oneRowTable<Fn, K, S, 2>(i),
          oneRowTable<Fn, K, S, 3>(i)};
}

}  // namespace gather
}  // namespace msgc
