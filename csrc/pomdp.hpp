// The plain discrete POMDP shared by the parser, the writer and the solvers.
// Pure C++17: no Python or pybind11 header may be included from the core (see STYLE.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "errors.hpp"

namespace trim {

// Compressed sparse rows: row r holds (idx[k], val[k]) for k in [ptr[r], ptr[r+1]),
// columns increasing within a row.
struct Csr {
    std::vector<std::int64_t> ptr;
    std::vector<int> idx;
    std::vector<double> val;
};

// Dense row-major arrays, the same layout as the NumPy arrays on the Python side:
//   T[a][s][s']  transition probabilities           (n_actions * n_states * n_states)
//   Z[a][s'][o]  observation probabilities          (n_actions * n_states * n_obs)
//   R[a][s]      expected immediate reward           (n_actions * n_states)
//   b0[s]        initial belief                      (n_states)
// or, when `sparse` is set, T and Z as compressed rows (T and Z then stay empty):
//   Ts row a*S + s   over s': the non-zero T[a][s][s']   (n_actions * n_states rows)
//   Zs row a*S + s'  over o:  the non-zero Z[a][s'][o]   (n_actions * n_states rows)
// A RockSample[7,8] (12,545 states, 13 actions) needs 16 GB as dense T and 4 MB as rows.
struct Pomdp {
    int n_states = 0;
    int n_actions = 0;
    int n_obs = 0;
    double discount = 0.95;
    std::vector<double> T;
    std::vector<double> Z;
    std::vector<double> R;
    std::vector<double> b0;
    bool sparse = false;
    Csr Ts;
    Csr Zs;
    // Optional names; empty when the file gave counts only.
    std::vector<std::string> state_names;
    std::vector<std::string> action_names;
    std::vector<std::string> obs_names;

    // Dense accessors (sparse == false only).
    double t(int a, int s, int s2) const {
        return T[(static_cast<std::size_t>(a) * n_states + s) * n_states + s2];
    }
    double z(int a, int s2, int o) const {
        return Z[(static_cast<std::size_t>(a) * n_states + s2) * n_obs + o];
    }
    double r(int a, int s) const { return R[static_cast<std::size_t>(a) * n_states + s]; }
};

}  // namespace trim
