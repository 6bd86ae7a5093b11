// HSVI2/SARSOP-style point-based solver: see hsvi_solver.hpp for the bounds and the sampling.
#include "hsvi_solver.hpp"

#include "pomdp_sparse.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define TRIM_HAVE_MMAP 1
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>

namespace trim {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Depth cap of a trial: with discount < 1 the gap threshold eps * gamma^-t outgrows any gap
// long before; with discount 1 it stops trials that cycle forever.
constexpr int kMaxDepth = 2000;
constexpr double kTrialGapFraction = 0.9;

std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Belief identity: leaves are not stored, so two hashes with different seeds (and the
// support size) stand for the belief; values are quantised to 1e-9, as beliefs reached along
// different paths differ in the last bits.
std::uint64_t hash_belief(const int* idx, const double* val, int supp, std::uint64_t seed) {
    std::uint64_t h = mix64(seed ^ static_cast<std::uint64_t>(supp));
    for (int k = 0; k < supp; ++k) {
        auto q = static_cast<std::int64_t>(std::llround(val[k] * 1e9));
        h = mix64(h ^ (static_cast<std::uint64_t>(idx[k]) * 0x9e3779b97f4a7c15ULL));
        h = mix64(h + static_cast<std::uint64_t>(q) + seed);
    }
    return h;
}

std::string num(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.7g", x);
    return buf;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

HsviSolver::HsviSolver(Pomdp model, const HsviConfig& config)
    : m_(std::move(model)), cfg_(config), S_(m_.n_states), A_(m_.n_actions), O_(m_.n_obs),
      gamma_(m_.discount) {
    if (S_ <= 0 || A_ <= 0 || O_ <= 0)
        throw std::invalid_argument("model must have at least one state, action and observation");
    const auto S = static_cast<std::size_t>(S_), A = static_cast<std::size_t>(A_),
               O = static_cast<std::size_t>(O_);
    if (m_.R.size() != A * S || m_.b0.size() != S ||
        (!m_.sparse && (m_.T.size() != A * S * S || m_.Z.size() != A * S * O)))
        throw std::invalid_argument("model arrays do not match n_states/n_actions/n_obs");
    if (m_.sparse) {
        for (auto [c, cols, name] : {std::make_tuple(&m_.Ts, S, "T"), std::make_tuple(&m_.Zs, O, "Z")}) {
            const std::string why = csr_problem(*c, A * S, cols, name);
            if (!why.empty()) throw std::invalid_argument("sparse model: " + why);
        }
    }
    if (!(gamma_ > 0.0 && gamma_ <= 1.0))
        throw std::invalid_argument("discount must be in (0, 1]; got " + std::to_string(gamma_));
    if (!(cfg_.target_gap > 0.0))
        throw std::invalid_argument("target_gap must be > 0; got " +
                                    std::to_string(cfg_.target_gap));
    if (!(cfg_.max_memory_mb > 0.0))
        throw std::invalid_argument("max_memory_mb must be > 0");
    // One storage from here on: the compressed rows (a dense model is converted with every
    // entry kept bit for bit, and its dense arrays released).
    build_sparse();
    check_model();
    normalise_model();
    if (cfg_.single_alphas) {
        // Every vector is bounded by max|R| / (1 - discount); far inside float's range
        // (3.4e38) a rounded-down entry stays finite and within 6e-8 relative of its value.
        double rmax = 0.0;
        for (double r : m_.R) rmax = std::max(rmax, std::abs(r));
        if (!(gamma_ < 1.0) || !(rmax / (1.0 - gamma_) < 1e30))
            throw std::invalid_argument(
                "single-precision alpha vectors need discount < 1 and max|R| / (1 - discount) "
                "< 1e30; got discount " + num(gamma_) + ", max|R| " + num(rmax));
        single_ = true;
        alpha_elem_ = sizeof(float);
    }
    dense_.assign(S, 0.0);
    pred_.assign(S, 0.0);
    newalpha_.assign(S, 0.0);
    w_.assign(S, 0.0);
    qlb_.assign(A, 0.0);
    qub_.assign(A, 0.0);
    best_o_.assign(O, -1);
    evaluated_.assign(A, 0);
    bucket_idx_.resize(O);
    scr_.resize(A);
    {
        // Belief runs must fit a chunk; >= 8 S per chunk wastes at most 1/8 at chunk tails.
        int lg = 12;
        while ((std::int64_t{1} << lg) < 8 * static_cast<std::int64_t>(S_)) ++lg;
        bel_idx_.init(lg);
        bel_val_.init(lg);
        bel_inv_.init(lg);
        nodes_.init(12);
        int la = 10;
        while ((std::int64_t{1} << la) < 8 * static_cast<std::int64_t>(A_)) ++la;
        act_.init(la);
        int lc = 12;
        while ((std::int64_t{1} << lc) < 8 * static_cast<std::int64_t>(O_)) ++lc;
        child_.init(lc);
    }
    bucket_val_.resize(O);
}

// The bounds are only valid for a proper model: finite, non-negative, stochastic rows.
// Runs on the compressed rows, which hold every entry but +-0 (so the first bad entry and
// the row sums are those of the dense rows).
void HsviSolver::check_model() const {
    const int S = S_, A = A_;
    auto fail = [](const std::string& msg) { throw ModelError(msg); };
    for (int a = 0; a < A; ++a)
        for (int s = 0; s < S; ++s) {
            const std::size_t r = static_cast<std::size_t>(a) * S + s;
            double sum_t = 0.0, sum_z = 0.0;
            for (auto k = T_.ptr[r]; k < T_.ptr[r + 1]; ++k) {
                const double p = T_.val[k];
                if (!std::isfinite(p) || p < 0.0)
                    fail("T[a=" + std::to_string(a) + ", s=" + std::to_string(s) + ", s'=" +
                         std::to_string(T_.idx[k]) + "] = " + num(p) +
                         "; expected a probability");
                sum_t += p;
            }
            for (auto k = Z_.ptr[r]; k < Z_.ptr[r + 1]; ++k) {
                const double z = Z_.val[k];
                if (!std::isfinite(z) || z < 0.0)
                    fail("Z[a=" + std::to_string(a) + ", s'=" + std::to_string(s) + ", o=" +
                         std::to_string(Z_.idx[k]) + "] = " + num(z) +
                         "; expected a probability");
                sum_z += z;
            }
            if (!(std::abs(sum_t - 1.0) <= cfg_.tol))
                fail("T[a=" + std::to_string(a) + ", s=" + std::to_string(s) + ", :] sums to " +
                     num(sum_t) + "; expected 1 (tol " + num(cfg_.tol) + ")");
            if (!(std::abs(sum_z - 1.0) <= cfg_.tol))
                fail("Z[a=" + std::to_string(a) + ", s'=" + std::to_string(s) + ", :] sums to " +
                     num(sum_z) + "; expected 1 (tol " + num(cfg_.tol) + ")");
            if (!std::isfinite(m_.r(a, s)))
                fail("R[a=" + std::to_string(a) + ", s=" + std::to_string(s) + "] is not finite");
        }
    double sum_b = 0.0;
    for (int s = 0; s < S; ++s) {
        if (!std::isfinite(m_.b0[s]) || m_.b0[s] < 0.0)
            fail("b0[" + std::to_string(s) + "] = " + num(m_.b0[s]) +
                 "; expected a probability");
        sum_b += m_.b0[s];
    }
    if (!(std::abs(sum_b - 1.0) <= cfg_.tol))
        fail("b0 sums to " + num(sum_b) + "; expected 1 (tol " + num(cfg_.tol) + ")");
}

// Rows within the tolerance are scaled to sum to 1 exactly: the bounds (blind policy, FIB,
// backups) are only valid for a stochastic model, and classic files print 6 digits.
void HsviSolver::normalise_model() {
    auto normalise = [](double* row, std::int64_t n) {
        double sum = 0.0;
        for (std::int64_t j = 0; j < n; ++j) sum += row[j];
        if (sum > 0.0 && sum != 1.0)
            for (std::int64_t j = 0; j < n; ++j) row[j] /= sum;
    };
    for (std::size_t r = 0; r < static_cast<std::size_t>(A_) * S_; ++r) {
        normalise(T_.val.data() + T_.ptr[r], T_.ptr[r + 1] - T_.ptr[r]);
        normalise(Z_.val.data() + Z_.ptr[r], Z_.ptr[r + 1] - Z_.ptr[r]);
    }
    double sum = 0.0;
    for (int s = 0; s < S_; ++s) sum += m_.b0[s];
    if (sum > 0.0 && sum != 1.0)
        for (int s = 0; s < S_; ++s) m_.b0[s] /= sum;
}

// Ctrl-C or the time limit during the initial bounds (large models): stop iterating; the
// iterates are already valid bounds for discount < 1.
bool HsviSolver::should_stop() const {
    if (stop_ && stop_->load(std::memory_order_relaxed)) return true;
    return cfg_.time_limit > 0 && seconds_since(t0_) >= cfg_.time_limit;
}

void HsviSolver::build_sparse() {
    to_sparse(m_);
    T_ = std::move(m_.Ts);
    Z_ = std::move(m_.Zs);
}

// Best blind policy: alpha_a = R_a + gamma T_a alpha_a.  For discount < 1 the iteration starts
// from the constant min_s R(a,s) / (1 - gamma), a lower bound, and rises monotonically, so
// every iterate is a valid lower bound.  For discount 1 it starts from 0 and must converge
// (episodic under that fixed action); actions whose evaluation diverges are dropped.
void HsviSolver::init_blind() {
    const int S = S_;
    blind_.assign(static_cast<std::size_t>(A_) * S, 0.0);
    std::vector<double> cur(S), nxt(S);
    int n_valid = 0;
    for (int a = 0; a < A_; ++a) {
        double rmin = kInf, rmax = -kInf;
        for (int s = 0; s < S; ++s) {
            rmin = std::min(rmin, m_.r(a, s));
            rmax = std::max(rmax, std::abs(m_.r(a, s)));
        }
        std::fill(cur.begin(), cur.end(), gamma_ < 1.0 ? rmin / (1.0 - gamma_) : 0.0);
        const double scale = std::max(1.0, gamma_ < 1.0 ? rmax / (1.0 - gamma_) : rmax);
        const double tol = 1e-11 * scale;
        const int max_it = gamma_ < 1.0 ? 200000 : 100000;
        bool converged = false;
        for (int it = 0; it < max_it; ++it) {
            double delta = 0.0, vmax = 0.0;
            for (int s = 0; s < S; ++s) {
                const std::size_t r = static_cast<std::size_t>(a) * S + s;
                double acc = 0.0;
                for (auto k = T_.ptr[r]; k < T_.ptr[r + 1]; ++k) acc += T_.val[k] * cur[T_.idx[k]];
                double v = m_.r(a, s) + gamma_ * acc;
                delta = std::max(delta, std::abs(v - cur[s]));
                vmax = std::max(vmax, std::abs(v));
                nxt[s] = v;
            }
            cur.swap(nxt);
            if (!std::isfinite(vmax) || vmax > 1e15) break;
            if (gamma_ < 1.0 && should_stop()) break;  // every iterate is a lower bound
            if (delta <= tol) {
                converged = true;
                break;
            }
        }
        // discount < 1: any iterate is a lower bound; discount 1: only a converged one.
        if (gamma_ < 1.0 || converged) {
            std::copy(cur.begin(), cur.end(), blind_.begin() + static_cast<std::ptrdiff_t>(a) * S);
            const std::vector<int> self(static_cast<std::size_t>(O_), n_alpha_);
            add_alpha(cur.data(), a, self.data());  // alpha_a <= R_a + gamma T_a alpha_a
            ++n_valid;
        }
    }
    if (n_valid == 0)
        throw std::invalid_argument(
            "discount 1.0: the blind-policy evaluation alpha_a = R_a + T_a alpha_a diverges for "
            "every action, so there is no finite lower bound to start from; use discount < 1 or an "
            "episodic model (every fixed action reaches absorbing zero-reward states)");
}

// Fast informed bound, started from the MDP value (itself from the trivial upper bound
// max R / (1 - gamma)); the FIB operator is monotone and below the MDP operator, so the
// iterates decrease and stay upper bounds.
void HsviSolver::init_fib() {
    const int S = S_, A = A_, O = O_;
    const double rmax = *std::max_element(m_.R.begin(), m_.R.end());
    double rabs = 0.0;
    for (double r : m_.R) rabs = std::max(rabs, std::abs(r));
    const double scale = std::max(1.0, gamma_ < 1.0 ? rabs / (1.0 - gamma_) : rabs);
    const double tol = 1e-10 * scale;
    const int max_it = gamma_ < 1.0 ? 100000 : 100000;

    // MDP value iteration.
    std::vector<double> V(S, gamma_ < 1.0 ? rmax / (1.0 - gamma_) : 0.0), V2(S);
    bool converged = false;
    for (int it = 0; it < max_it; ++it) {
        double delta = 0.0, vmax = 0.0;
        for (int s = 0; s < S; ++s) {
            double best = -kInf;
            for (int a = 0; a < A; ++a) {
                const std::size_t r = static_cast<std::size_t>(a) * S + s;
                double acc = 0.0;
                for (auto k = T_.ptr[r]; k < T_.ptr[r + 1]; ++k) acc += T_.val[k] * V[T_.idx[k]];
                best = std::max(best, m_.r(a, s) + gamma_ * acc);
            }
            delta = std::max(delta, std::abs(best - V[s]));
            vmax = std::max(vmax, std::abs(best));
            V2[s] = best;
        }
        V.swap(V2);
        if (!std::isfinite(vmax) || vmax > 1e15) break;
        if (gamma_ < 1.0 && should_stop()) break;  // every iterate is an upper bound
        if (delta <= tol) {
            converged = true;
            break;
        }
    }
    if (gamma_ >= 1.0 && !converged)
        throw std::invalid_argument(
            "discount 1.0: MDP value iteration does not converge (some policy collects "
            "unbounded reward), so there is no finite upper bound; the model is not episodic");

    // Q stored state-major (S x A) for the FIB inner loop.
    std::vector<double> Q(static_cast<std::size_t>(S) * A), Q2(Q.size());
    for (int a = 0; a < A; ++a)
        for (int s = 0; s < S; ++s) {
            const std::size_t r = static_cast<std::size_t>(a) * S + s;
            double acc = 0.0;
            for (auto k = T_.ptr[r]; k < T_.ptr[r + 1]; ++k) acc += T_.val[k] * V[T_.idx[k]];
            Q[static_cast<std::size_t>(s) * A + a] = m_.r(a, s) + gamma_ * acc;
        }

    // One FIB sweep over the states [s_lo, s_hi) (all actions); returns the largest change.
    // Threads split by state so that each writes its own contiguous block of Q2.
    auto sweep = [&](int s_lo, int s_hi, std::vector<double>& acc, std::vector<char>& seen,
                     std::vector<int>& touched) {
        double delta = 0.0;
        for (int s = s_lo; s < s_hi; ++s)
            for (int a = 0; a < A; ++a) {
                const std::size_t r = static_cast<std::size_t>(a) * S + s;
                for (auto k = T_.ptr[r]; k < T_.ptr[r + 1]; ++k) {
                    const int s2 = T_.idx[k];
                    const double p = T_.val[k];
                    const std::size_t zr = static_cast<std::size_t>(a) * S + s2;
                    const double* q = &Q[static_cast<std::size_t>(s2) * A];
                    for (auto j = Z_.ptr[zr]; j < Z_.ptr[zr + 1]; ++j) {
                        const int o = Z_.idx[j];
                        const double w = p * Z_.val[j];
                        if (!seen[o]) {
                            seen[o] = 1;
                            touched.push_back(o);
                        }
                        double* ac = &acc[static_cast<std::size_t>(o) * A];
                        for (int a2 = 0; a2 < A; ++a2) ac[a2] += w * q[a2];
                    }
                }
                double sum = 0.0;
                for (int o : touched) {
                    double* ac = &acc[static_cast<std::size_t>(o) * A];
                    double best = -kInf;
                    for (int a2 = 0; a2 < A; ++a2) {
                        best = std::max(best, ac[a2]);
                        ac[a2] = 0.0;
                    }
                    sum += best;
                    seen[o] = 0;
                }
                touched.clear();
                double v = m_.r(a, s) + gamma_ * sum;
                double& out = Q2[static_cast<std::size_t>(s) * A + a];
                delta = std::max(delta, std::abs(v - Q[static_cast<std::size_t>(s) * A + a]));
                out = v;
            }
        return delta;
    };

    // Threads only pay when a sweep is long: every sweep ends in a join, and on a loaded
    // machine a descheduled thread stalls it.  A random sparse model with S=1000, A=8, O=10
    // (6.4e6 multiply-adds per sweep) took 10 s with one thread and 15 s with two on the
    // shared 2-core machine (load ~12), so only sweeps above 2e7 are split (by state, so each
    // thread writes its own block of Q2).  The shared problems are all far below this.
    const double work = static_cast<double>(T_.idx.size()) *
                        (static_cast<double>(Z_.idx.size()) / (static_cast<double>(A) * S)) * A;
    const int n_threads = std::max(1, std::min(cfg_.n_threads, S));
    const bool parallel = n_threads > 1 && work > 2e7;
    std::vector<std::vector<double>> acc(n_threads, std::vector<double>(static_cast<std::size_t>(O) * A, 0.0));
    std::vector<std::vector<char>> seen(n_threads, std::vector<char>(O, 0));
    std::vector<std::vector<int>> touched(n_threads);
    const int fib_it = 100000;
    for (int it = 0; it < fib_it; ++it) {
        double delta = 0.0;
        if (parallel) {
            std::vector<double> deltas(n_threads, 0.0);
            std::vector<std::thread> pool;
            std::vector<std::exception_ptr> errs(n_threads);
            for (int t = 0; t < n_threads; ++t) {
                int lo = static_cast<int>(static_cast<long long>(S) * t / n_threads);
                int hi = static_cast<int>(static_cast<long long>(S) * (t + 1) / n_threads);
                pool.emplace_back([&, t, lo, hi] {
                    try {
                        deltas[t] = sweep(lo, hi, acc[t], seen[t], touched[t]);
                    } catch (...) {
                        errs[t] = std::current_exception();
                    }
                });
            }
            for (auto& th : pool) th.join();
            for (auto& e : errs)
                if (e) std::rethrow_exception(e);
            for (double d : deltas) delta = std::max(delta, d);
        } else {
            delta = sweep(0, S, acc[0], seen[0], touched[0]);
        }
        Q.swap(Q2);
        if (delta <= tol) break;
        if (should_stop()) break;  // every iterate is an upper bound
    }
    fib_.assign(static_cast<std::size_t>(A) * S, 0.0);
    corner_.assign(S, -kInf);
    for (int s = 0; s < S; ++s)
        for (int a = 0; a < A; ++a) {
            double q = Q[static_cast<std::size_t>(s) * A + a];
            fib_[static_cast<std::size_t>(a) * S + s] = q;
            corner_[s] = std::max(corner_[s], q);
        }
}

// ------------------------------------------------------------------ belief tree
//
// Only the beliefs of expanded nodes (the ones a trial descended into, plus b0) are
// stored.  A leaf keeps its cached bounds and its identity (two 64-bit hashes and the
// support size); its belief is recomputed from its parent's whenever the parent's backup
// needs the leaf's bounds (children()).  On Hallway2 after 10 s, 1,128 of 82,432 nodes were
// expanded and the leaves' dense beliefs (87 states on average) were 144 MB of the 212 MB
// the solver held; recomputing tau(b, a, .) costs sum_s |T(.|s,a)| |Z(.|s',a)| operations,
// far below evaluating a fresh leaf against thousands of alpha vectors.

int HsviSolver::add_node(const int* idx, const double* val, int supp, bool store) {
    const std::uint64_t h = hash_belief(idx, val, supp, 0);
    const std::uint64_t h2 = hash_belief(idx, val, supp, 0x51ed270b27a3c1f5ULL);
    auto range = node_hash_.equal_range(h);
    for (auto it = range.first; it != range.second; ++it) {
        const Node& nd = nodes_[it->second];
        if (nd.supp == supp && nd.h2 == h2) {
            if (store) materialise(it->second, idx, val);
            return it->second;
        }
    }
    Node nd;
    nd.supp = supp;
    nd.h2 = h2;
    nd.lb = -kInf;
    // FIB at the belief, max_a sum_s b(s) Q(a, s), is below the corner interpolation and
    // is the initial upper bound; sawtooth points can only lower it (upper() takes the min).
    double fib = -kInf;
    for (int a = 0; a < A_; ++a) {
        const double* q = &fib_[static_cast<std::size_t>(a) * S_];
        double v = 0.0;
        for (int k = 0; k < supp; ++k) v += val[k] * q[idx[k]];
        fib = std::max(fib, v);
    }
    nd.ub = fib;
    nd.ub_epoch = 0;  // forces a first evaluation over all points
    const int id = static_cast<int>(nodes_.size());
    nodes_.push_back(nd);
    node_hash_.emplace(h, id);
    if (store) materialise(id, idx, val);
    return id;
}

void HsviSolver::materialise(int n, const int* idx, const double* val) {
    Node& nd = nodes_[n];
    if (nd.bel_off >= 0) return;
    const std::int64_t off = bel_idx_.grow(nd.supp);
    bel_val_.grow(nd.supp);
    bel_inv_.grow(nd.supp);
    nd.bel_off = off;
    int* bi = &bel_idx_[off];
    double* bv = &bel_val_[off];
    double* binv = &bel_inv_[off];
    for (int k = 0; k < nd.supp; ++k) {
        bi[k] = idx[k];
        bv[k] = val[k];
        binv[k] = 1.0 / val[k];
    }
}

// The per-node block: R(b, a) and the cached Q_U(b, a) for every action, started from the
// FIB bound sum_s b(s) Q(a, s) >= Q*(b, a); the children of an action are listed once a
// backup needs them.
void HsviSolver::ensure_block(int n) {
    if (nodes_[n].blk >= 0) return;
    const std::int64_t blk = act_.grow(A_);
    const Node& nd = nodes_[n];
    const int* idx = &bel_idx_[nd.bel_off];
    const double* val = &bel_val_[nd.bel_off];
    for (int a = 0; a < A_; ++a) {
        double r = 0.0, q = 0.0;
        const double* fq = &fib_[static_cast<std::size_t>(a) * S_];
        for (int k = 0; k < nd.supp; ++k) {
            r += val[k] * m_.r(a, idx[k]);
            q += val[k] * fq[idx[k]];
        }
        act_[blk + a].r = r;
        act_[blk + a].qub = q;
    }
    nodes_[n].blk = blk;
}

// Children tau(b, a, o) of one action for every observation of positive probability:
// tau(b,a,o)(s') = Z(o|s',a) sum_s T(s'|s,a) b(s) / p(o|b,a), computed into scratch (valid
// until a backup of another node) and, the first time, entered into the tree as leaves.
const HsviSolver::ChildBeliefs& HsviSolver::children(int n, int a) {
    ensure_block(n);
    if (scr_node_ != n) {
        for (auto& sc : scr_) sc.valid = false;
        scr_node_ = n;
    }
    ChildBeliefs& sc = scr_[a];
    if (sc.valid) return sc;
    sc.idx.clear();
    sc.val.clear();
    sc.off.assign(1, 0);
    sc.p.clear();
    const Node& nd = nodes_[n];
    const int supp = nd.supp;
    const int* bidx = &bel_idx_[nd.bel_off];
    const double* bval = &bel_val_[nd.bel_off];
    for (int k = 0; k < supp; ++k) {
        const std::size_t row = static_cast<std::size_t>(a) * S_ + bidx[k];
        for (auto j = T_.ptr[row]; j < T_.ptr[row + 1]; ++j) {
            const int s2 = T_.idx[j];
            if (pred_[s2] == 0.0) touched_.push_back(s2);
            pred_[s2] += bval[k] * T_.val[j];
        }
    }
    std::sort(touched_.begin(), touched_.end());
    for (int s2 : touched_) {
        const double ps = pred_[s2];
        pred_[s2] = 0.0;
        if (ps <= 0.0) continue;
        const std::size_t zr = static_cast<std::size_t>(a) * S_ + s2;
        for (auto j = Z_.ptr[zr]; j < Z_.ptr[zr + 1]; ++j) {
            bucket_idx_[Z_.idx[j]].push_back(s2);
            bucket_val_[Z_.idx[j]].push_back(ps * Z_.val[j]);
        }
    }
    touched_.clear();
    ActSlot& slot = act_[nodes_[n].blk + a];
    const bool fresh = slot.child_off < 0;
    new_children_.clear();
    int k = 0;
    for (int o = 0; o < O_; ++o) {
        auto& bi = bucket_idx_[o];
        auto& bv = bucket_val_[o];
        if (bi.empty()) continue;
        double p = 0.0;
        for (double v : bv) p += v;
        if (p > 0.0) {
            for (double& v : bv) v /= p;
            sc.idx.insert(sc.idx.end(), bi.begin(), bi.end());
            sc.val.insert(sc.val.end(), bv.begin(), bv.end());
            sc.off.push_back(static_cast<int>(sc.idx.size()));
            sc.p.push_back(p);
            if (fresh) {
                const int c = add_node(bi.data(), bv.data(), static_cast<int>(bi.size()), false);
                new_children_.push_back(Child{c, o});
            }
            ++k;
        }
        bi.clear();
        bv.clear();
    }
    if (fresh) {
        // (add_node above may have grown nodes_, never act_: `slot` is still valid.)
        slot.child_off = child_.grow(k);
        for (int i = 0; i < k; ++i) child_[slot.child_off + i] = new_children_[i];
        slot.n_child = k;
    } else if (k != slot.n_child) {
        throw std::logic_error("belief tree: recomputed children differ from the stored ones");
    }
    sc.valid = true;
    return sc;
}

double HsviSolver::child_lower(const ChildBeliefs& sc, int k, int c) {
    Node& nd = nodes_[c];
    if (nd.bel_off >= 0) return lower(c);
    return lower_at(nd, &sc.idx[sc.off[k]], &sc.val[sc.off[k]]);
}

double HsviSolver::child_upper(const ChildBeliefs& sc, int k, int c) {
    Node& nd = nodes_[c];
    if (nd.bel_off >= 0) return upper(c);
    return upper_at(nd, &sc.idx[sc.off[k]], &sc.val[sc.off[k]]);
}

// ------------------------------------------------------------------ bounds

// V_L at a node: the cached max over the vectors [0, lb_stamp) plus the vectors added since.
// Runs of >= kLaneMin new vectors use the lane-blocked store alpha_blk_ (contiguous loads that
// the compiler vectorises instead of one gather per support state and vector): the
// profile of a 5 s Hallway2 solve had 52 % of its time in this function.
double HsviSolver::lower_at(Node& nd, const int* idx, const double* val) {
    if (nd.lb_stamp < n_alpha_) {
        if (single_)
            lower_scan<float>(nd, idx, val);
        else
            lower_scan<double>(nd, idx, val);
        nd.lb_stamp = n_alpha_;
    }
    return nd.lb;
}

template <class E>
void HsviSolver::lower_scan(Node& nd, const int* idx, const double* val) {
    const int supp = nd.supp;
    int k = nd.lb_stamp;
    while (k < n_alpha_) {
        const int blk = k / kLanes;
        const int lo = k - blk * kLanes;
        const int hi = std::min(kLanes, n_alpha_ - blk * kLanes);
        const E* base = static_cast<const E*>(alpha_blk_[blk].data());
        if (hi - lo >= kLaneMin) {
            double acc[kLanes] = {};
            for (int j = 0; j < supp; ++j) {
                const double v = val[j];
                const E* row = base + static_cast<std::size_t>(idx[j]) * kLanes;
                for (int l = 0; l < kLanes; ++l) acc[l] += v * static_cast<double>(row[l]);
            }
            for (int l = lo; l < hi; ++l)
                if (acc[l] > nd.lb || nd.lb_alpha < 0) {
                    nd.lb = acc[l];
                    nd.lb_alpha = blk * kLanes + l;
                }
        } else {
            for (int l = lo; l < hi; ++l) {
                double v = 0.0;
                for (int j = 0; j < supp; ++j)
                    v += val[j] * static_cast<double>(base[static_cast<std::size_t>(idx[j]) * kLanes + l]);
                if (v > nd.lb || nd.lb_alpha < 0) {
                    nd.lb = v;
                    nd.lb_alpha = blk * kLanes + l;
                }
            }
        }
        k = blk * kLanes + hi;
    }
}

// A leaf (belief not stored) answers with its cached bound, which stays valid: its parent
// refreshes it through children() before using it.
double HsviSolver::lower(int n) {
    Node& nd = nodes_[n];
    if (nd.bel_off < 0) return nd.lb;
    return lower_at(nd, &bel_idx_[nd.bel_off], &bel_val_[nd.bel_off]);
}

template <class E>
RowBuffer<E> HsviSolver::take_alpha_rows() {
    RowBuffer<E> out(static_cast<std::size_t>(n_alpha_) * S_);
    for (int k = 0; k < n_alpha_; ++k) {
        const E* base = static_cast<const E*>(alpha_blk_[k / kLanes].data()) + k % kLanes;
        E* row = out.data() + static_cast<std::size_t>(k) * S_;
        for (int s = 0; s < S_; ++s) row[s] = base[static_cast<std::size_t>(s) * kLanes];
        if (k % kLanes == kLanes - 1 || k == n_alpha_ - 1) alpha_blk_[k / kLanes].release();
    }
    alpha_blk_.clear();
    n_alpha_ = 0;
    return out;
}

double HsviSolver::sawtooth_dense(const double* bdense, const int* idx, int supp,
                                  int from_point) const {
    double f = 0.0;
    for (int k = 0; k < supp; ++k) f += bdense[idx[k]] * corner_[idx[k]];
    double best = 0.0;
    const int P = static_cast<int>(pt_node_.size());
    for (int i = from_point; i < P; ++i) {
        const int j = pt_node_[i];
        const double phi = pt_phi_[i];
        if (j < 0 || phi <= best) continue;  // c_i <= 1, so c_i phi_i <= phi_i <= best
        const Node& nj = nodes_[j];
        const int* ji = &bel_idx_[nj.bel_off];
        const double* jinv = &bel_inv_[nj.bel_off];
        // c_i phi_i only shrinks along the loop: stop as soon as it cannot beat `best`.
        const double stop_below = best / phi;
        double c = kInf;
        for (int k = 0; k < nj.supp; ++k) {
            c = std::min(c, bdense[ji[k]] * jinv[k]);
            if (c <= stop_below) break;
        }
        if (c > stop_below) best = c * phi;
    }
    return f - best;
}

double HsviSolver::upper_at(Node& nd, const int* idx, const double* val) {
    const int P = static_cast<int>(pt_node_.size());
    const bool stale = nd.ub_epoch != ub_epoch_;
    if (stale || nd.ub_stamp < P) {
        for (int k = 0; k < nd.supp; ++k) dense_[idx[k]] = val[k];
        const double v = sawtooth_dense(dense_.data(), idx, nd.supp, stale ? 0 : nd.ub_stamp);
        for (int k = 0; k < nd.supp; ++k) dense_[idx[k]] = 0.0;
        nd.ub = std::min(nd.ub, v);
        nd.ub_stamp = P;
        nd.ub_epoch = ub_epoch_;
    }
    return nd.ub;
}

double HsviSolver::upper(int n) {
    Node& nd = nodes_[n];
    if (nd.bel_off < 0) return nd.ub;
    return upper_at(nd, &bel_idx_[nd.bel_off], &bel_val_[nd.bel_off]);
}

AlphaBlock::AlphaBlock(std::size_t bytes) : bytes_(bytes) {
#ifdef TRIM_HAVE_MMAP
    // From 64 KiB (16 vectors of 512 states; TagAvoid's are 111 KB): below, the blocks are
    // few bytes and malloc's lists serve them well; above, a mapping per block costs nothing
    // beside filling it.
    if (bytes >= (std::size_t{1} << 16)) {
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        p_ = p;  // anonymous pages are zero-filled
        mapped_ = true;
        return;
    }
#endif
    p_ = std::calloc(bytes, 1);
    if (!p_) throw std::bad_alloc();
}

AlphaBlock& AlphaBlock::operator=(AlphaBlock&& o) noexcept {
    if (this != &o) {
        release();
        p_ = o.p_;
        bytes_ = o.bytes_;
        mapped_ = o.mapped_;
        o.p_ = nullptr;
    }
    return *this;
}

void AlphaBlock::release() {
    if (!p_) return;
#ifdef TRIM_HAVE_MMAP
    if (mapped_) {
        munmap(p_, bytes_);
        p_ = nullptr;
        return;
    }
#endif
    std::free(p_);
    p_ = nullptr;
}

void HsviSolver::alpha_set(int k, int s, double v) {
    const std::size_t i = static_cast<std::size_t>(s) * kLanes + k % kLanes;
    void* b = alpha_blk_[k / kLanes].data();
    if (!single_) {
        static_cast<double*>(b)[i] = v;
        return;
    }
    // Round toward -inf: a stored vector must never exceed the backup it stands for.
    float f = static_cast<float>(v);
    if (static_cast<double>(f) > v) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    static_cast<float*>(b)[i] = f;
}

void HsviSolver::add_alpha(const double* alpha, int action, const int* succ) {
    {
        if (n_alpha_ % kLanes == 0)
            alpha_blk_.emplace_back(static_cast<std::size_t>(S_) * kLanes * alpha_elem_);
        for (int s = 0; s < S_; ++s) alpha_set(n_alpha_, s, alpha[s]);
    }
    alpha_act_.push_back(action);
    if (succ)
        alpha_succ_.insert(alpha_succ_.end(), succ, succ + O_);
    else
        alpha_succ_.insert(alpha_succ_.end(), static_cast<std::size_t>(O_), -1);
    ++n_alpha_;
}

void HsviSolver::set_point(int n, double v) {
    Node& nd = nodes_[n];
    nd.ub = std::min(nd.ub, v);
    if (nd.supp == 1) {
        // A corner: lower the corner value itself; every phi_i changes.
        const int s = bel_idx_[nd.bel_off];
        if (v < corner_[s]) {
            // Cached node bounds stay valid upper bounds; the next evaluation of a node
            // (a point is added by almost every backup) uses the lower corner, so there is no
            // need to re-evaluate every node against every point (ub_epoch_ stays).
            corner_[s] = v;
            for (std::size_t i = 0; i < pt_node_.size(); ++i) {
                if (pt_node_[i] < 0) continue;
                const Node& nj = nodes_[pt_node_[i]];
                double f = 0.0;
                for (int k = 0; k < nj.supp; ++k)
                    f += bel_val_[nj.bel_off + k] * corner_[bel_idx_[nj.bel_off + k]];
                pt_phi_[i] = f - pt_val_[i];
            }
        }
        return;
    }
    if (nd.point >= 0) {
        pt_node_[nd.point] = -1;
        --n_live_points_;
    }
    double f = 0.0;
    for (int k = 0; k < nd.supp; ++k)
        f += bel_val_[nd.bel_off + k] * corner_[bel_idx_[nd.bel_off + k]];
    nd.point = static_cast<int>(pt_node_.size());
    pt_node_.push_back(n);
    pt_val_.push_back(v);
    pt_phi_.push_back(f - v);
    ++n_live_points_;
}

// Q_U(b, a) or Q_L(b, a) from the children of an action (refreshing their bounds).
double HsviSolver::q_value(int n, int a, bool upper_bound) {
    const ChildBeliefs& sc = children(n, a);
    const ActSlot& slot = act_[nodes_[n].blk + a];
    double acc = 0.0;
    for (int k = 0; k < slot.n_child; ++k) {
        const int c = child_[slot.child_off + k].id;
        acc += sc.p[k] * (upper_bound ? child_upper(sc, k, c) : child_lower(sc, k, c));
    }
    return slot.r + gamma_ * acc;
}

void HsviSolver::backup(int n, bool lower_too) {
    ensure_block(n);
    const std::int64_t blk = nodes_[n].blk;
    std::fill(evaluated_.begin(), evaluated_.end(), 0);
    double best_ub = -kInf;
    int a_ub = -1;
    for (;;) {
        int a = -1;
        for (int b = 0; b < A_; ++b)
            if (!evaluated_[b] && (a < 0 || act_[blk + b].qub > act_[blk + a].qub)) a = b;
        if (a < 0 || (!force_alpha_ && a_ub >= 0 && act_[blk + a].qub <= best_ub)) break;
        const double q = q_value(n, a, true);
        double& cache = act_[blk + a].qub;
        cache = std::min(cache, q);
        evaluated_[a] = 1;
        if (cache > best_ub) {
            best_ub = cache;
            a_ub = a;
        }
    }
    for (int a = 0; a < A_; ++a) qub_[a] = act_[blk + a].qub;
    ub_action_ = a_ub;
    const double ub_old = upper(n);
    if (best_ub < ub_old - 1e-12 * std::max(1.0, std::abs(ub_old))) set_point(n, best_ub);
    if (!lower_too) return;

    const double lb_old = lower(n);
    const double lb_tol = 1e-12 * std::max(1.0, std::abs(lb_old));
    int a_best = -1;
    for (int a = 0; a < A_; ++a) {
        qlb_[a] = -kInf;
        if (!force_alpha_ && act_[blk + a].qub <= lb_old + lb_tol) continue;
        qlb_[a] = q_value(n, a, false);
        if (a_best < 0 || qlb_[a] > qlb_[a_best]) a_best = a;
    }
    if (a_best < 0) return;
    if (!force_alpha_ && !(qlb_[a_best] > lb_old + lb_tol)) return;
    // alpha(s) = R(a,s) + gamma sum_s' T(s'|s,a) sum_o Z(o|s',a) alpha_o(s'), alpha_o the best
    // vector at tau(b,a,o); an observation of probability 0 at b takes b's own best vector.
    const int fallback = nodes_[n].lb_alpha;
    std::fill(best_o_.begin(), best_o_.end(), fallback);
    {
        const ActSlot& slot = act_[blk + a_best];
        for (int k = 0; k < slot.n_child; ++k) {
            const Child& ch = child_[slot.child_off + k];
            best_o_[ch.o] = nodes_[ch.id].lb_alpha;
        }
    }
    for (int s2 = 0; s2 < S_; ++s2) {
        const std::size_t zr = static_cast<std::size_t>(a_best) * S_ + s2;
        double acc = 0.0;
        for (auto j = Z_.ptr[zr]; j < Z_.ptr[zr + 1]; ++j)
            acc += Z_.val[j] * alpha_at(best_o_[Z_.idx[j]], s2);
        w_[s2] = acc;
    }
    for (int s = 0; s < S_; ++s) {
        const std::size_t r = static_cast<std::size_t>(a_best) * S_ + s;
        double acc = 0.0;
        for (auto j = T_.ptr[r]; j < T_.ptr[r + 1]; ++j) acc += T_.val[j] * w_[T_.idx[j]];
        newalpha_[s] = m_.r(a_best, s) + gamma_ * acc;
    }
    add_alpha(newalpha_.data(), a_best, best_o_.data());
    lower(n);
}

// Alpha-vector pruning that keeps the lower bound certified.
//
// Every vector satisfies alpha_k <= R_{a_k} + gamma sum_o T_{a_k} Z_{a_k,o} alpha_{succ(k,o)}
// pointwise (a backup, or a blind vector naming itself).  If the set Gamma is closed
// (every successor is in Gamma, or is pointwise below a vector of Gamma), then
// V(b) = max_{k in Gamma} alpha_k . b satisfies V <= H_pi V for the greedy policy pi (act as
// the maximising vector says, then maximise again at the next belief), hence V <= V^pi:
// the reported lower bound is the value of the returned policy.  Dropping a vector that is
// best at no *expanded* belief (the earlier rule) breaks this: a surviving vector may have
// been backed up from it at a leaf, and the greedy policy then does worse than promised
// (issue 20: TagAvoid's 1 s policy simulated 47 standard errors below its bound).
//
// So: the roots are the best vectors at b0 and at every expanded belief (refreshed first);
// the survivors are the roots and everything reachable from them through succ.  A vector
// pointwise dominated by another survivor is replaced by it, in the nodes' caches and in
// the successor lists (alpha_i <= alpha_j and T, Z >= 0 keep every backup inequality),
// before the closure is taken again.  The lower bound at every expanded node is unchanged;
// a leaf whose cached vector goes is re-evaluated lazily.  (Rooting the leaves' vectors
// too kept ~10 % more vectors for the same bounds on Hallway2 and TagAvoid at a fixed
// number of trials.)
void HsviSolver::prune_alphas() {
    const int K0 = n_alpha_;
    const std::size_t O = static_cast<std::size_t>(O_);
    for (std::int64_t n = 0; n < nodes_.size(); ++n)
        if (n == 0 || nodes_[n].blk >= 0) lower(static_cast<int>(n));
    auto closure = [&](std::vector<char>& live, const std::vector<int>& redirect) {
        std::fill(live.begin(), live.end(), 0);
        std::vector<int> stack;
        auto push = [&](int k) {
            if (k < 0) return;
            k = redirect[k];
            if (!live[k]) {
                live[k] = 1;
                stack.push_back(k);
            }
        };
        for (std::int64_t n = 0; n < nodes_.size(); ++n)
            if (n == 0 || nodes_[n].blk >= 0) push(nodes_[n].lb_alpha);
        while (!stack.empty()) {
            const int k = stack.back();
            stack.pop_back();
            for (std::size_t o = 0; o < O; ++o) push(alpha_succ_[k * O + o]);
        }
    };
    std::vector<int> redirect(K0);
    for (int k = 0; k < K0; ++k) redirect[k] = k;
    std::vector<char> live(K0, 0);
    closure(live, redirect);

    // Pointwise dominance among the survivors (ties keep the older vector); chains end at a
    // vector that is not dominated, so redirect[] maps straight to a survivor.
    std::vector<int> kept;
    for (int k = 0; k < K0; ++k)
        if (live[k]) kept.push_back(k);
    std::vector<char> dominated(K0, 0);
    // States in decreasing order of the survivors' spread max_k alpha_k(s) - min_k alpha_k(s),
    // those where all agree left out (they decide nothing): a pair that is not ordered
    // usually shows it at the first few states of this order.  In index order, RockSample[7,8]
    // (12,545 states, ~2,700 vectors) spent 30 s in this loop at the end of a 30 s solve, the
    // vectors agreeing along the long runs of states no sampled belief reaches.
    std::vector<int> order;
    {
        std::vector<double> lo(S_, kInf), hi(S_, -kInf);
        for (int k : kept) {
            for (int s = 0; s < S_; ++s) {
                const double x = alpha_at(k, s);
                lo[s] = std::min(lo[s], x);
                hi[s] = std::max(hi[s], x);
            }
        }
        for (int s = 0; s < S_; ++s)
            if (hi[s] > lo[s]) order.push_back(s);
        std::stable_sort(order.begin(), order.end(),
                         [&](int x, int y) { return hi[x] - lo[x] > hi[y] - lo[y]; });
    }
    for (int i : kept) {
        for (int j : kept) {
            if (j == i || dominated[j]) continue;
            bool le = true, eq = true;
            for (std::size_t k = 0; k < order.size() && le; ++k) {
                const int s = order[k];
                const double x = alpha_at(i, s), y = alpha_at(j, s);
                le = x <= y;
                eq = eq && x == y;
            }
            if (le && (!eq || j < i)) {
                dominated[i] = 1;
                redirect[i] = j;
                break;
            }
        }
    }
    for (int k = 0; k < K0; ++k) {
        int j = redirect[k];
        while (redirect[j] != j) j = redirect[j];
        redirect[k] = j;
    }
    closure(live, redirect);

    std::vector<int> remap(K0, -1), prefix(K0 + 1, 0);
    int K = 0;
    for (int k = 0; k < K0; ++k) {
        prefix[k] = K;
        if (!live[k]) continue;
        if (K != k) {
            // Move vector k to column K of the lane-blocked store (K < k: in place).
            for (int s = 0; s < S_; ++s) alpha_set(K, s, alpha_at(k, s));  // exact: no rounding
            std::memmove(&alpha_succ_[static_cast<std::size_t>(K) * O],
                         &alpha_succ_[static_cast<std::size_t>(k) * O], sizeof(int) * O);
        }
        alpha_act_[K] = alpha_act_[k];
        remap[k] = K++;
    }
    prefix[K0] = K;
    for (int k = 0; k < K0; ++k)
        if (remap[k] < 0 && remap[redirect[k]] >= 0) remap[k] = remap[redirect[k]];
    for (std::size_t i = 0; i < static_cast<std::size_t>(K) * O; ++i)
        if (alpha_succ_[i] >= 0) alpha_succ_[i] = remap[alpha_succ_[i]];
    for (std::int64_t n = 0; n < nodes_.size(); ++n) {
        Node& nd = nodes_[n];
        if (nd.lb_alpha >= 0 && remap[nd.lb_alpha] >= 0) {
            nd.lb_alpha = remap[nd.lb_alpha];
            nd.lb_stamp = prefix[nd.lb_stamp];
        } else {
            nd.lb = -kInf;
            nd.lb_alpha = -1;
            nd.lb_stamp = 0;
        }
    }
    n_alpha_ = K;
    {
        const std::size_t blocks = (static_cast<std::size_t>(K) + kLanes - 1) / kLanes;
        alpha_blk_.erase(alpha_blk_.begin() + static_cast<std::ptrdiff_t>(blocks), alpha_blk_.end());
        for (int l = K % kLanes; l > 0 && l < kLanes; ++l)  // unused lanes of the last block
            for (int s = 0; s < S_; ++s)
                alpha_set(static_cast<int>(blocks - 1) * kLanes + l, s, 0.0);
    }
    alpha_act_.resize(K);
    alpha_succ_.resize(static_cast<std::size_t>(K) * O);
    alpha_at_last_prune_ = K;
}

// Drop upper-bound points that the other points (and the corners) already imply:
// sawtooth_{-i}(b_i) <= v_i.  Done one point at a time so two equal points keep one.
void HsviSolver::prune_points() {
    const int P = static_cast<int>(pt_node_.size());
    for (int i = 0; i < P; ++i) {
        const int n = pt_node_[i];
        if (n < 0) continue;
        pt_node_[i] = -1;
        const Node& nd = nodes_[n];
        const int* idx = &bel_idx_[nd.bel_off];
        const double* val = &bel_val_[nd.bel_off];
        for (int k = 0; k < nd.supp; ++k) dense_[idx[k]] = val[k];
        const double v = sawtooth_dense(dense_.data(), idx, nd.supp, 0);
        for (int k = 0; k < nd.supp; ++k) dense_[idx[k]] = 0.0;
        if (v <= pt_val_[i] + 1e-12 * std::max(1.0, std::abs(pt_val_[i]))) {
            nodes_[n].point = -1;
            --n_live_points_;
        } else {
            pt_node_[i] = n;
        }
    }
    // Compact, and map each node's stamp to the number of surviving points before it, so
    // that nodes keep evaluating only the points added after their cached value.
    std::vector<int> prefix(P + 1, 0);
    int Q = 0;
    for (int i = 0; i < P; ++i) {
        prefix[i] = Q;
        if (pt_node_[i] < 0) continue;
        pt_node_[Q] = pt_node_[i];
        pt_val_[Q] = pt_val_[i];
        pt_phi_[Q] = pt_phi_[i];
        nodes_[pt_node_[Q]].point = Q;
        ++Q;
    }
    prefix[P] = Q;
    pt_node_.resize(Q);
    pt_val_.resize(Q);
    pt_phi_.resize(Q);
    for (std::int64_t n = 0; n < nodes_.size(); ++n)
        if (Node& nd = nodes_[n]; nd.ub_epoch == ub_epoch_) nd.ub_stamp = prefix[std::min(nd.ub_stamp, P)];
    points_at_last_prune_ = Q;
}

// The solve is over: the belief tree, its hash and the bound points go before the vectors
// move out, so that the result reuses their memory instead of adding to the peak (TagAvoid,
// 30 s: the tree is ~20 MB, the result 6 MB).
void HsviSolver::release_tree() {
    nodes_.clear();
    bel_idx_.clear();
    bel_val_.clear();
    bel_inv_.clear();
    act_.clear();
    child_.clear();
    std::unordered_multimap<std::uint64_t, int>().swap(node_hash_);
    std::vector<int>().swap(pt_node_);
    std::vector<double>().swap(pt_phi_);
    std::vector<double>().swap(pt_val_);
    std::vector<ChildBeliefs>().swap(scr_);
    std::vector<int>().swap(alpha_succ_);
}

double HsviSolver::memory_bytes() const {
    const double S = static_cast<double>(S_);
    return static_cast<double>(alpha_blk_.size()) * S * kLanes * static_cast<double>(alpha_elem_) +
           static_cast<double>(alpha_act_.capacity() + alpha_succ_.capacity()) * sizeof(int) +
           nodes_.bytes() + bel_idx_.bytes() + bel_val_.bytes() + bel_inv_.bytes() +
           act_.bytes() + child_.bytes() +
           static_cast<double>(pt_node_.capacity()) * (sizeof(int) + 2 * sizeof(double)) +
           static_cast<double>(node_hash_.size()) * 40.0 +
           static_cast<double>(T_.idx.capacity() + Z_.idx.capacity()) * 12.0;
}

void HsviSolver::check_memory() {
    const double mb = memory_bytes() / (1024.0 * 1024.0);
    peak_mb_ = std::max(peak_mb_, mb);
    if (mb > cfg_.max_memory_mb) {
        std::ostringstream os;
        os << "solver storage reached " << mb << " MB, above max_memory_mb=" << cfg_.max_memory_mb
           << " (" << n_alpha_ << " alpha vectors of " << S_ << " states, " << nodes_.size()
           << " beliefs, " << n_live_points_
           << " upper-bound points); raise max_memory_mb or lower time_limit";
        throw MemoryLimitError(os.str());
    }
}

// One depth-first trial from b0: descend along the action with the best upper bound and the
// observation with the largest weighted excess uncertainty, then back up both bounds on the
// way back (HSVI2).
void HsviSolver::trial(double eps) {
    path_.clear();
    int n = 0;
    double thr = eps;
    for (int t = 0;; ++t) {
        // The cached bounds decide first, so that a leaf is not expanded for nothing.
        if (upper(n) - lower(n) <= thr) break;
        backup(n, false);
        if (upper(n) - lower(n) <= thr || t >= kMaxDepth) break;
        const int a = ub_action_;
        const ChildBeliefs& sc = children(n, a);
        const ActSlot& slot = act_[nodes_[n].blk + a];
        const double thr_next = thr / gamma_;
        int best = -1, best_k = -1;
        double best_score = -kInf;
        for (int k = 0; k < slot.n_child; ++k) {
            const int c = child_[slot.child_off + k].id;
            const double score =
                sc.p[k] * (child_upper(sc, k, c) - child_lower(sc, k, c) - thr_next);
            if (score > best_score) {
                best_score = score;
                best = c;
                best_k = k;
            }
        }
        // The descent goes on from the chosen child: its belief is stored from now on.
        if (best >= 0) materialise(best, &sc.idx[sc.off[best_k]], &sc.val[sc.off[best_k]]);
        path_.push_back(n);
        if (best < 0) break;
        n = best;
        thr = thr_next;
        if ((t & 63) == 63) check_memory();
    }
    if (path_.empty()) path_.push_back(n);
    for (auto it = path_.rbegin(); it != path_.rend(); ++it) backup(*it, true);
}

HsviResult HsviSolver::solve(const std::atomic<bool>* stop, HsviProgress* progress) {
    if (solved_) throw std::logic_error("HsviSolver::solve: a solver solves once");
    solved_ = true;
    const auto t0 = std::chrono::steady_clock::now();
    t0_ = t0;
    stop_ = stop;
    HsviResult res;
    res.n_states = S_;
    init_fib();
    init_blind();
    {
        std::vector<int> idx;
        std::vector<double> val;
        for (int s = 0; s < S_; ++s)
            if (m_.b0[s] > 0.0) {
                idx.push_back(s);
                val.push_back(m_.b0[s]);
            }
        if (idx.empty()) throw std::invalid_argument("b0 has no positive entry");
        add_node(idx.data(), val.data(), static_cast<int>(idx.size()), true);
    }
    check_memory();

    long long iter = 0;
    double last_record = -1.0, last_lb = kInf, last_ub = kInf;
    auto record = [&](double t, bool force) {
        const double lb = lower(0), ub = upper(0);
        if (!force && lb == last_lb && ub == last_ub) return;
        if (!force && t - last_record < 1e-3) return;
        res.history.insert(res.history.end(),
                           {t, lb, ub, static_cast<double>(n_alpha_), static_cast<double>(iter)});
        last_record = t;
        last_lb = lb;
        last_ub = ub;
    };
    record(seconds_since(t0), true);
    double last_progress = -1.0;
    for (;;) {
        const double lb = lower(0), ub = upper(0);
        const double t = seconds_since(t0);
        if (progress && t - last_progress >= 0.05) {
            std::lock_guard<std::mutex> lock(progress->mutex);
            progress->time = t;
            progress->lb = lb;
            progress->ub = ub;
            progress->n_alpha = n_alpha_;
            progress->iteration = iter;
            progress->fresh = true;
            last_progress = t;
        }
        if (ub - lb <= cfg_.target_gap) break;
        if (cfg_.time_limit > 0 && t >= cfg_.time_limit) break;
        if (cfg_.max_iterations >= 0 && iter >= cfg_.max_iterations) break;
        if (stop && stop->load(std::memory_order_relaxed)) {
            res.interrupted = true;
            break;
        }
        // Trial precision: a fixed fraction of the current gap (never below the target).
        // HSVI2 with eps = target_gap dives ~log(gap/eps)/log(1/gamma) levels per trial;
        // shallower trials back up the beliefs near b0 far more often, which is what the
        // anytime lower bound needs; near convergence this is plain HSVI2.  0.6 (tuned on
        // hallway and network when every leaf belief was stored) gave way to 0.9 once leaves
        // became cheap: 30 s at load ~6-8, fraction 0.6 / 0.8 / 0.9: Hallway2 LB 0.3078 /
        // 0.3477 / 0.3530 (UB 0.896 / 0.866 / 0.858), TagAvoid -6.136 (0.6) / -6.102 (0.9),
        // hallway 1.0062 / - / 0.9937 (SARSOP 0.9875), network 293.18529 for both.
        trial(std::max(cfg_.target_gap, kTrialGapFraction * (ub - lb)));
        ++iter;
        if (n_alpha_ >= std::max(64, 2 * alpha_at_last_prune_)) prune_alphas();
        if (n_live_points_ >= std::max(64, 2 * points_at_last_prune_)) prune_points();
        check_memory();
        record(seconds_since(t0), false);
    }
    prune_alphas();
    // The reported bound is max_k alpha_k . b0 over the returned set exactly (a cache that
    // pruning redirected to a dominating vector may sit below it).
    nodes_[0].lb = -kInf;
    nodes_[0].lb_alpha = -1;
    nodes_[0].lb_stamp = 0;
    lower(0);
    const double t_end = seconds_since(t0);
    record(t_end, true);

    res.lower_bound = lower(0);
    res.upper_bound = upper(0);
    res.gap = res.upper_bound - res.lower_bound;
    res.time_s = t_end;
    res.iterations = iter;
    res.n_beliefs = static_cast<long long>(nodes_.size());
    check_memory();
    res.memory_mb = peak_mb_;
    // Last, because it empties the store: the vectors move out block by block, each block
    // freed once copied, so the result costs one block beyond the store rather than a second
    // full copy (RockSample[7,8]: ~3,900 vectors of 12,545 states are 390 MB).
    res.actions = alpha_act_;
    res.single = single_;
    release_tree();
    if (single_)
        res.alphas_single = take_alpha_rows<float>();
    else
        res.alphas = take_alpha_rows<double>();
    return res;
}

HsviBackupCheck HsviSolver::backup_at(const Pomdp& model, const std::vector<double>& alphas,
                                      const std::vector<int>& actions,
                                      const std::vector<double>& b) {
    HsviSolver solver(model, HsviConfig{});  // (a copy: the solver owns its model)
    const int S = solver.S_;
    if (alphas.size() != actions.size() * static_cast<std::size_t>(S) || actions.empty())
        throw std::invalid_argument("alphas must have shape (K, n_states) with K >= 1");
    if (b.size() != static_cast<std::size_t>(S))
        throw std::invalid_argument("b must have n_states entries");
    solver.init_fib();
    for (std::size_t k = 0; k < actions.size(); ++k)
        solver.add_alpha(&alphas[k * S], actions[k], nullptr);
    std::vector<int> idx;
    std::vector<double> val;
    for (int s = 0; s < S; ++s)
        if (b[s] > 0.0) {
            idx.push_back(s);
            val.push_back(b[s]);
        }
    solver.add_node(idx.data(), val.data(), static_cast<int>(idx.size()), true);
    solver.force_alpha_ = true;
    solver.backup(0, true);
    HsviBackupCheck out;
    out.alpha.assign(static_cast<std::size_t>(S), 0.0);
    for (int s = 0; s < S; ++s) out.alpha[s] = solver.alpha_at(solver.n_alpha_ - 1, s);
    out.action = solver.alpha_act_.back();
    out.q_lower = solver.qlb_;
    out.q_upper = solver.qub_;
    out.fib = solver.fib_;
    return out;
}

}  // namespace trim
