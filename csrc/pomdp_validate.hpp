// Consistency checks of a plain POMDP (csrc/pomdp.hpp): sizes, finiteness, signs and
// stochastic rows.  Pure C++17, no Python headers.
#pragma once

#include <optional>
#include <string>

#include "pomdp.hpp"

namespace trim {

// The first problem found in a model.  `array` says where: 'd' discount, 'n' sizes/names,
// 'T', 'Z', 'R', 'b' (initial belief).  `a`/`s` locate the offending row (-1 when not
// applicable; for 'Z' `s` is the successor state s').
struct ModelIssue {
    std::string message;
    char array = 'n';
    int a = -1;
    int s = -1;
};

// Returns the first problem, scanning discount, sizes, T, Z, R and b0 in this order:
// every entry finite, probabilities non-negative, each row T[a, s, :], Z[a, s', :] and b0
// summing to 1 within `tol` (absolute).  Messages name the array, the action and state (with
// their names when the model has names) and the sum found, e.g.
//   "T[a=1, s=3, :] sums to 0.98; expected 1 (tol 1e-06)".
std::optional<ModelIssue> check_pomdp(const Pomdp& m, double tol);

// Throws ModelError with check_pomdp's message when the model is inconsistent;
// std::invalid_argument when tol is negative or not finite.
void validate_pomdp(const Pomdp& m, double tol);

}  // namespace trim
