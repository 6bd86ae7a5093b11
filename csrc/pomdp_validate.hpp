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

// Largest value magnitude the solvers are given: every reward must satisfy
//   |R(a, s)| * H <= kMaxValue,  H = 1 / (1 - discount) for discount < 1, H = 1 otherwise,
// because H * max|R| bounds every value a backup computes (alpha vectors, bounds, Q values)
// for discount < 1.  1e100 leaves 200 orders of magnitude below DBL_MAX (1.8e308) for the
// sums, differences and sawtooth ratios built from those values; no model of any use comes
// near it, while rewards near 1e307 made the bounds inf/nan after a whole time limit.
constexpr double kMaxValue = 1e100;

// Returns the first problem, scanning discount, sizes, T, Z, R and b0 in this order:
// every entry finite, |R| * H <= kMaxValue, probabilities non-negative, each row T[a, s, :], Z[a, s', :] and b0
// summing to 1 within `tol` (absolute).  Messages name the array, the action and state (with
// their names when the model has names) and the sum found, e.g.
//   "T[a=1, s=3, :] sums to 0.98; expected 1 (tol 1e-06)".
std::optional<ModelIssue> check_pomdp(const Pomdp& m, double tol);

// Throws ModelError with check_pomdp's message when the model is inconsistent;
// std::invalid_argument when tol is negative or not finite.
void validate_pomdp(const Pomdp& m, double tol);

}  // namespace trim
