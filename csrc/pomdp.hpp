// The plain discrete POMDP shared by the parser, the writer and the solvers.
// Pure C++17: no Python or pybind11 header may be included from the core (see STYLE.md).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "errors.hpp"

namespace trim {

// Dense row-major arrays, the same layout as the NumPy arrays on the Python side:
//   T[a][s][s']  transition probabilities           (n_actions * n_states * n_states)
//   Z[a][s'][o]  observation probabilities          (n_actions * n_states * n_obs)
//   R[a][s]      expected immediate reward           (n_actions * n_states)
//   b0[s]        initial belief                      (n_states)
struct Pomdp {
    int n_states = 0;
    int n_actions = 0;
    int n_obs = 0;
    double discount = 0.95;
    std::vector<double> T;
    std::vector<double> Z;
    std::vector<double> R;
    std::vector<double> b0;
    // Optional names; empty when the file gave counts only.
    std::vector<std::string> state_names;
    std::vector<std::string> action_names;
    std::vector<std::string> obs_names;

    double t(int a, int s, int s2) const {
        return T[(static_cast<std::size_t>(a) * n_states + s) * n_states + s2];
    }
    double z(int a, int s2, int o) const {
        return Z[(static_cast<std::size_t>(a) * n_states + s2) * n_obs + o];
    }
    double r(int a, int s) const { return R[static_cast<std::size_t>(a) * n_states + s]; }
};

}  // namespace trim
