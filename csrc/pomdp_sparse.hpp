// Conversions between the dense and the compressed-row storage of a Pomdp's T and Z
// (csrc/pomdp.hpp).  Pure C++17.
#pragma once

#include <cstddef>
#include <string>

#include "pomdp.hpp"

namespace trim {

// Rows of a dense row-major (rows x cols) array as compressed rows, keeping every entry that
// is not +-0.0 (a NaN or a negative entry is kept, so that checks still see it), columns in
// increasing order.
Csr dense_to_csr(const double* dense, std::size_t rows, std::size_t cols);

// "" when `m` is well formed for the given shape: ptr has rows + 1 non-decreasing offsets
// from 0 to idx.size() == val.size(), and each row's columns are strictly increasing in
// [0, cols); otherwise what is wrong, prefixed with `name` ("T: row 3 ...").
std::string csr_problem(const Csr& m, std::size_t rows, std::size_t cols, const char* name);

// Stores T and Z of `m` as compressed rows (no-op when already sparse), releasing the dense
// arrays.  Values are kept bit for bit.
void to_sparse(Pomdp& m);

// Bytes of the compressed rows of T and Z of a sparse model (offsets, indices, values).
double csr_bytes(const Pomdp& m);

}  // namespace trim
