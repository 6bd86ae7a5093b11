// Finite-horizon POMDP with fully observed state variables (a MOMDP).
// Pure C++17: no Python or pybind11 header may be included from the core (see STYLE.md).
//
// The state is a pair (x, s): x in 0..X-1 is observed exactly at every epoch, s in 0..S-1 is
// hidden and tracked by a belief over the S-simplex.  Decision epochs t = 0..H-1; after the
// decision at epoch H-1 the terminal reward R_final[x, s] is collected.
//
// Dense row-major arrays, the layout of the NumPy arrays on the Python side.  Each of T, Z, R
// is either time-indexed (leading H dimension) or time-invariant (no leading dimension, stored
// once and used at every epoch):
//   T[(t,) a, x, s, x', s']  P(x', s' | x, s, a) at epoch t
//   Z[(t,) a, x', s', o]     P(o | a, x', s') for the observation after the epoch-t transition
//   R[(t,) a, x, s]          expected immediate reward
//   R_final[x, s]            terminal reward at epoch H
//   x0[x]                    distribution of the initial observed value
//   b0[x, s]                 initial hidden belief conditional on x0 = x
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace trim {
namespace fh {

struct FhModel {
    int H = 0, A = 0, X = 0, S = 0, O = 0;
    double discount = 1.0;
    bool T_timed = false, Z_timed = false, R_timed = false;
    std::vector<double> T, Z, R, R_final, x0, b0;

    // Row over (x', s') of T for (t, a, x, s): X * S numbers.
    const double* T_row(int t, int a, int x, int s) const {
        std::size_t tt = T_timed ? static_cast<std::size_t>(t) : 0;
        return &T[((((tt * A + a) * X + x) * S + s) * X) * S];
    }
    // Block over (s, x', s') of T for (t, a, x): S * X * S numbers.
    const double* T_block(int t, int a, int x) const { return T_row(t, a, x, 0); }
    // Block over (s', o) of Z for (t, a, x'): S * O numbers.
    const double* Z_block(int t, int a, int xp) const {
        std::size_t tt = Z_timed ? static_cast<std::size_t>(t) : 0;
        return &Z[(((tt * A + a) * X + xp) * S) * O];
    }
    const double* R_vec(int t, int a, int x) const {
        std::size_t tt = R_timed ? static_cast<std::size_t>(t) : 0;
        return &R[((tt * A + a) * X + x) * S];
    }

    // Throws std::invalid_argument when the sizes of the arrays do not match the dimensions.
    void check_sizes() const {
        auto need = [](const char* name, std::size_t got, std::size_t want) {
            if (got != want)
                throw std::invalid_argument(std::string("FhModel: ") + name + " has " +
                                            std::to_string(got) + " entries; expected " +
                                            std::to_string(want));
        };
        if (S > 64)
            throw std::invalid_argument("FhModel: at most 64 hidden states are supported; got " +
                                        std::to_string(S));
        if (H < 1 || A < 1 || X < 1 || S < 1 || O < 1)
            throw std::invalid_argument("FhModel: H, A, X, S, O must all be >= 1; got H=" +
                                        std::to_string(H) + " A=" + std::to_string(A) +
                                        " X=" + std::to_string(X) + " S=" + std::to_string(S) +
                                        " O=" + std::to_string(O));
        const std::size_t h = static_cast<std::size_t>(H), a = A, x = X, s = S, o = O;
        need("T", T.size(), (T_timed ? h : 1) * a * x * s * x * s);
        need("Z", Z.size(), (Z_timed ? h : 1) * a * x * s * o);
        need("R", R.size(), (R_timed ? h : 1) * a * x * s);
        need("R_final", R_final.size(), x * s);
        need("x0", x0.size(), x);
        need("b0", b0.size(), x * s);
    }
};

struct FhConfig {
    std::vector<double> belief_points;  // M * S, added at every (t, x)
    int grid_resolution = 0;            // simplex grid with step 1/r; 0 = none
    int n_samples = 32;                 // forward-simulated trajectories per pass
    int n_refine = 0;                   // extra passes with bound-guided sampling
    double target_gap = 0.0;            // stop refining once the gap at b0 is <= this
    int n_threads = 1;
    unsigned long long seed = 0;
    bool share_slices = true;           // compute once per group of identical T slices
    bool sawtooth = true;               // upper bound also by sawtooth at the belief points
};

struct FhResult {
    std::vector<double> alphas;          // K * S
    std::vector<int> actions;            // K
    std::vector<long long> offsets;      // H * X + 1
    double lower_bound = 0, upper_bound = 0, gap = 0, time_s = 0;
    long long n_beliefs = 0;             // belief points over all (t, x) in the last pass
    int n_passes = 0;
    std::vector<double> history;         // n_passes * 3: time, lb, ub after each pass
};

// Solve one model.  Throws std::invalid_argument on inconsistent sizes or configuration.
FhResult solve_fh(const FhModel& model, const FhConfig& config);

// Solve many models in parallel on a pool of n_threads threads (each model single-threaded
// unless there are fewer models than threads).  An exception on a worker is rethrown here.
std::vector<FhResult> solve_fh_many(const std::vector<FhModel>& models, const FhConfig& config,
                                    int n_threads);

}  // namespace fh
}  // namespace trim
