// Backward point-based value iteration for finite-horizon MOMDPs (see fh_model.hpp).
//
// Lower bound: Gamma_{H,x} = {R_final[x]}; for t = H-1..0 and every observed value x, one
// point-based backup per belief point b of B_{t,x}:
//   alpha_a(s) = R[t,a,x,s] + g sum_{x',o} sum_{s'} T[t,a,x,s,x',s'] Z[t,a,x',s',o] alpha*_{x',o}(s')
// with alpha*_{x',o} the vector of Gamma_{t+1,x'} that is best at the (unnormalised) successor
// belief y_{x',o}(s') = Z[t,a,x',s',o] sum_s b(s) T[t,a,x,s,x',s'].  The best action's vector is
// kept; vectors best at no point are pruned.  Every vector is the value of a conditional plan,
// so max_k alpha_k . b is a valid lower bound everywhere.
//
// Upper bound: a time-indexed fast informed bound Q_t(a, x, s), then at the same belief points
// the Bellman backup of the upper bound of epoch t+1, that bound being
//   U_{t+1}(x', y) = min( max_a y . Q_{t+1}(a, x'),  sawtooth_{t+1,x'}(y) ),
// the sawtooth interpolating the backed-up values at corners and belief points
// (Hauskrecht 2000).  Both parts are positively homogeneous in y, so unnormalised successor
// beliefs are used directly and P(x', o | b, a) never needs to be divided out.
//
// Sharing: observed values x whose transition slices T[t, :, x] are identical share their
// belief set, their successor computations and the argmax choices; only the reward (and so the
// best action) may differ per x (TRIM: the token bins of a draft).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <thread>

#include "fh_model.hpp"
#include "fh_parallel.hpp"

namespace trim {
namespace fh {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

inline double dot(const double* a, const double* b, int n) {
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// Results of one (t, x) in one pass.
struct EpochX {
    std::vector<double> alphas;  // K * S
    std::vector<int> acts;       // K
    std::vector<double> corner;  // S: upper bound at the corners
    std::vector<double> fib;     // A * S: fast informed bound vectors
    std::vector<double> sw_d;    // sawtooth points: v_i - b_i . corner (< 0)
    std::vector<double> sw_inv;  // n_sw * S: 1 / b_i(s), 0 where b_i(s) == 0
    int K() const { return static_cast<int>(acts.size()); }
    int n_sw() const { return static_cast<int>(sw_d.size()); }
};

// A unit of shared work at one epoch: a belief set and the observed values that use it.
struct Unit {
    int rep = 0;             // x whose T slice is used
    std::vector<int> xs;     // observed values computed from this unit
    int set = 0;             // index of the belief set (per epoch)
};

class Solver {
   public:
    Solver(const FhModel& m, const FhConfig& c)
        : m_(m), c_(c), H(m.H), A(m.A), X(m.X), S(m.S), O(m.O), g_(m.discount), pool_(c.n_threads) {}

    FhResult run();

   private:
    void build_structure();
    void build_fib();
    void build_point_sets();
    void backward_pass();
    void sample(int n_traj, int pass, std::mt19937_64& rng);
    void add_sample(int t, int x, const double* b) {
        auto& v = samples_[static_cast<std::size_t>(t) * X + x];
        v.insert(v.end(), b, b + S);
    }
    double ub_eval(int t1, int xp, const double* y) const;
    double lb_eval(int t1, int xp, const double* y, int* arg = nullptr) const;
    // Unnormalised successor beliefs of (t, x, b, a): for each reachable x' and o with
    // positive probability, y (S numbers) appended to `ys` and (x', o, 1) to `keys`.  With
    // `all`, also the pairs (x', o) reachable from some hidden state but of probability zero
    // under b, as (x', o, 0) with y = the successor of the uniform belief: a vector built by a
    // backup must still say what the plan does there, or it is not a plan's value off b.
    void successors(int t, int x, int a, const double* b, std::vector<double>& tau,
                    std::vector<double>& ys, std::vector<int>& keys, bool all = false) const;
    void record_result(FhResult& res) const;

    const FhModel& m_;
    const FhConfig& c_;
    const int H, A, X, S, O;
    const double g_;
    WorkerPool pool_;

    std::vector<std::vector<int>> reach_;   // [(t*A + a)*X + x] -> x' with T mass
    std::vector<std::vector<int>> zobs_;    // [(t*A + a)*X + x'] -> o with Z mass
    std::vector<int> group_;                // [t*X + x] -> group id at epoch t
    std::vector<int> n_groups_;             // [t]
    std::vector<double> grid_;              // grid points (and user points), normalised
    std::vector<std::vector<double>> samples_;  // [t*X + x] sampled beliefs
    std::vector<std::vector<double>> sets_;     // [t*X_groups...] via set_index_
    std::vector<int> set_base_;                 // [t] -> first set index of epoch t
    std::vector<EpochX> ex_;                    // [(H+1) * X]
};

void Solver::build_structure() {
    const int HT = m_.T_timed ? H : 1, HZ = m_.Z_timed ? H : 1;
    reach_.assign(static_cast<std::size_t>(H) * A * X, {});
    for (int t = 0; t < H; ++t) {
        for (int a = 0; a < A; ++a) {
            for (int x = 0; x < X; ++x) {
                auto& r = reach_[(static_cast<std::size_t>(t) * A + a) * X + x];
                if (t >= HT) {  // time-invariant: copy epoch 0
                    r = reach_[(static_cast<std::size_t>(0) * A + a) * X + x];
                    continue;
                }
                const double* blk = m_.T_block(t, a, x);
                for (int xp = 0; xp < X; ++xp) {
                    bool any = false;
                    for (int s = 0; s < S && !any; ++s)
                        for (int sp = 0; sp < S; ++sp)
                            if (blk[(static_cast<std::size_t>(s) * X + xp) * S + sp] > 0.0) {
                                any = true;
                                break;
                            }
                    if (any) r.push_back(xp);
                }
            }
        }
    }
    zobs_.assign(static_cast<std::size_t>(H) * A * X, {});
    for (int t = 0; t < H; ++t)
        for (int a = 0; a < A; ++a)
            for (int xp = 0; xp < X; ++xp) {
                auto& z = zobs_[(static_cast<std::size_t>(t) * A + a) * X + xp];
                if (t >= HZ) {
                    z = zobs_[(static_cast<std::size_t>(0) * A + a) * X + xp];
                    continue;
                }
                const double* blk = m_.Z_block(t, a, xp);
                for (int o = 0; o < O; ++o) {
                    bool any = false;
                    for (int sp = 0; sp < S; ++sp)
                        if (blk[static_cast<std::size_t>(sp) * O + o] > 0.0) {
                            any = true;
                            break;
                        }
                    if (any) z.push_back(o);
                }
            }
    // Groups of observed values with identical T slices (all actions) at each epoch.
    group_.assign(static_cast<std::size_t>(H) * X, -1);
    n_groups_.assign(H, 0);
    const std::size_t blk_n = static_cast<std::size_t>(S) * X * S;
    for (int t = 0; t < H; ++t) {
        if (t >= HT && t > 0) {
            std::copy(group_.begin(), group_.begin() + X, group_.begin() + static_cast<std::size_t>(t) * X);
            n_groups_[t] = n_groups_[0];
            continue;
        }
        std::vector<int> reps;
        for (int x = 0; x < X; ++x) {
            int found = -1;
            for (std::size_t gi = 0; gi < reps.size() && found < 0; ++gi) {
                bool same = true;
                for (int a = 0; a < A && same; ++a)
                    same = std::memcmp(m_.T_block(t, a, x), m_.T_block(t, a, reps[gi]),
                                       blk_n * sizeof(double)) == 0;
                if (same) found = static_cast<int>(gi);
            }
            if (found < 0) {
                found = static_cast<int>(reps.size());
                reps.push_back(x);
            }
            group_[static_cast<std::size_t>(t) * X + x] = found;
        }
        n_groups_[t] = static_cast<int>(reps.size());
    }
}

void Solver::build_fib() {
    ex_.assign(static_cast<std::size_t>(H + 1) * X, EpochX{});
    for (int x = 0; x < X; ++x) {
        EpochX& e = ex_[static_cast<std::size_t>(H) * X + x];
        const double* rf = &m_.R_final[static_cast<std::size_t>(x) * S];
        e.fib.assign(rf, rf + S);  // one vector: every action is the same at the end
        e.corner.assign(rf, rf + S);
        e.alphas.assign(rf, rf + S);
        e.acts.assign(1, -1);
    }
    for (int t = H - 1; t >= 0; --t) {
        for (int x = 0; x < X; ++x) {
            EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
            e.fib.assign(static_cast<std::size_t>(A) * S, 0.0);
            for (int a = 0; a < A; ++a) {
                const double* r = m_.R_vec(t, a, x);
                const auto& rch = reach_[(static_cast<std::size_t>(t) * A + a) * X + x];
                for (int s = 0; s < S; ++s) {
                    const double* row = m_.T_row(t, a, x, s);
                    double acc = 0.0;
                    for (int xp : rch) {
                        const EpochX& n = ex_[static_cast<std::size_t>(t + 1) * X + xp];
                        const int na = static_cast<int>(n.fib.size()) / S;
                        const double* zb = m_.Z_block(t, a, xp);
                        for (int o : zobs_[(static_cast<std::size_t>(t) * A + a) * X + xp]) {
                            double best = -kInf;
                            for (int ap = 0; ap < na; ++ap) {
                                const double* q = &n.fib[static_cast<std::size_t>(ap) * S];
                                double v = 0.0;
                                for (int sp = 0; sp < S; ++sp)
                                    v += row[static_cast<std::size_t>(xp) * S + sp] *
                                         zb[static_cast<std::size_t>(sp) * O + o] * q[sp];
                                best = std::max(best, v);
                            }
                            acc += best;
                        }
                    }
                    e.fib[static_cast<std::size_t>(a) * S + s] = r[s] + g_ * acc;
                }
            }
        }
    }
}

double Solver::ub_eval(int t1, int xp, const double* y) const {
    const EpochX& e = ex_[static_cast<std::size_t>(t1) * X + xp];
    const int na = static_cast<int>(e.fib.size()) / S;
    double f = -kInf;
    for (int a = 0; a < na; ++a) f = std::max(f, dot(y, &e.fib[static_cast<std::size_t>(a) * S], S));
    const double lin = dot(y, e.corner.data(), S);
    double best = lin;
    const int n = e.n_sw();
    for (int i = 0; i < n; ++i) {
        const double* inv = &e.sw_inv[static_cast<std::size_t>(i) * S];
        double phi = kInf;
        for (int s = 0; s < S; ++s)
            if (inv[s] > 0.0) phi = std::min(phi, y[s] * inv[s]);
        best = std::min(best, lin + phi * e.sw_d[i]);
    }
    return std::min(f, best);
}

double Solver::lb_eval(int t1, int xp, const double* y, int* arg) const {
    const EpochX& e = ex_[static_cast<std::size_t>(t1) * X + xp];
    const int K = e.K();
    double best = -kInf;
    int kb = 0;
    for (int k = 0; k < K; ++k) {
        double v = dot(y, &e.alphas[static_cast<std::size_t>(k) * S], S);
        if (v > best) {
            best = v;
            kb = k;
        }
    }
    if (arg) *arg = kb;
    return best;
}

void Solver::successors(int t, int x, int a, const double* b, std::vector<double>& tau,
                        std::vector<double>& ys, std::vector<int>& keys, bool all) const {
    ys.clear();
    keys.clear();
    tau.assign(S, 0.0);
    std::vector<double> tau_u;
    if (all) tau_u.assign(S, 0.0);
    for (int xp : reach_[(static_cast<std::size_t>(t) * A + a) * X + x]) {
        std::fill(tau.begin(), tau.end(), 0.0);
        if (all) std::fill(tau_u.begin(), tau_u.end(), 0.0);
        for (int s = 0; s < S; ++s) {
            const double* row = m_.T_row(t, a, x, s) + static_cast<std::size_t>(xp) * S;
            if (all)
                for (int sp = 0; sp < S; ++sp) tau_u[sp] += row[sp];
            if (b[s] == 0.0) continue;
            for (int sp = 0; sp < S; ++sp) tau[sp] += b[s] * row[sp];
        }
        const double* zb = m_.Z_block(t, a, xp);
        for (int o : zobs_[(static_cast<std::size_t>(t) * A + a) * X + xp]) {
            double p = 0.0;
            std::size_t base = ys.size();
            ys.resize(base + S);
            for (int sp = 0; sp < S; ++sp) {
                double v = tau[sp] * zb[static_cast<std::size_t>(sp) * O + o];
                ys[base + sp] = v;
                p += v;
            }
            int pos = 1;
            if (!(p > 0.0)) {
                if (!all) {
                    ys.resize(base);
                    continue;
                }
                double pu = 0.0;
                for (int sp = 0; sp < S; ++sp) {
                    double v = tau_u[sp] * zb[static_cast<std::size_t>(sp) * O + o];
                    ys[base + sp] = v;
                    pu += v;
                }
                if (!(pu > 0.0)) {  // unreachable from every hidden state
                    ys.resize(base);
                    continue;
                }
                pos = 0;
            }
            keys.push_back(xp);
            keys.push_back(o);
            keys.push_back(pos);
        }
    }
}

// Simplex grid with step 1/r: all compositions of r into S parts.
void simplex_grid(int S, int r, std::vector<double>& out) {
    std::vector<int> c(S, 0);
    // enumerate compositions recursively with an explicit stack
    std::function<void(int, int)> rec = [&](int i, int left) {
        if (i == S - 1) {
            c[i] = left;
            for (int s = 0; s < S; ++s) out.push_back(static_cast<double>(c[s]) / r);
            return;
        }
        for (int v = left; v >= 0; --v) {
            c[i] = v;
            rec(i + 1, left - v);
        }
    };
    rec(0, r);
}

void Solver::build_point_sets() {
    // One belief set per (t, group): corners first, then the sorted, de-duplicated union of
    // grid points, user points and the beliefs sampled at any x of the group.
    set_base_.assign(H + 1, 0);
    for (int t = 0; t < H; ++t) set_base_[t + 1] = set_base_[t] + n_groups_[t];
    sets_.assign(set_base_[H], {});
    pool_.run(set_base_[H], [&](int si, int) {
        int t = static_cast<int>(std::upper_bound(set_base_.begin(), set_base_.end(), si) -
                                 set_base_.begin()) - 1;
        int gidx = si - set_base_[t];
        std::vector<double> pts(grid_);
        for (int x = 0; x < X; ++x)
            if (group_[static_cast<std::size_t>(t) * X + x] == gidx) {
                const auto& smp = samples_[static_cast<std::size_t>(t) * X + x];
                pts.insert(pts.end(), smp.begin(), smp.end());
            }
        const int n = static_cast<int>(pts.size()) / S;
        std::vector<int> idx(n);
        for (int i = 0; i < n; ++i) idx[i] = i;
        std::sort(idx.begin(), idx.end(), [&](int i, int j) {
            return std::lexicographical_compare(&pts[static_cast<std::size_t>(i) * S],
                                                &pts[static_cast<std::size_t>(i) * S] + S,
                                                &pts[static_cast<std::size_t>(j) * S],
                                                &pts[static_cast<std::size_t>(j) * S] + S);
        });
        auto& out = sets_[si];
        out.assign(static_cast<std::size_t>(S) * S, 0.0);
        for (int s = 0; s < S; ++s) out[static_cast<std::size_t>(s) * S + s] = 1.0;
        const double* prev = nullptr;
        for (int i : idx) {
            const double* p = &pts[static_cast<std::size_t>(i) * S];
            bool corner = false;
            for (int s = 0; s < S; ++s)
                if (p[s] >= 1.0 - 1e-12) corner = true;
            if (corner) continue;
            if (prev) {
                double d = 0.0;
                for (int s = 0; s < S; ++s) d = std::max(d, std::fabs(p[s] - prev[s]));
                if (d <= 1e-9) continue;
            }
            out.insert(out.end(), p, p + S);
            prev = p;
        }
    });
}

void Solver::backward_pass() {
    const std::size_t Sz = static_cast<std::size_t>(S);
    // Per-worker scratch.
    struct Scratch {
        std::vector<double> tau, ys, lbsum, ubsum, fut, vals;
        std::vector<int> keys, kstar, keys_all, keys_off;
        std::vector<char> fut_done;
    };
    std::vector<Scratch> scratch(pool_.size());
    for (int t = H - 1; t >= 0; --t) {
        // Units of work: one per group (sharing) or one per x (no sharing).
        std::vector<Unit> units;
        for (int gidx = 0; gidx < n_groups_[t]; ++gidx) {
            std::vector<int> xs;
            for (int x = 0; x < X; ++x)
                if (group_[static_cast<std::size_t>(t) * X + x] == gidx) xs.push_back(x);
            if (c_.share_slices) {
                units.push_back(Unit{xs[0], xs, set_base_[t] + gidx});
            } else {
                for (int x : xs) units.push_back(Unit{x, {x}, set_base_[t] + gidx});
            }
        }
        // Candidate vectors per x: one per point of its set.
        std::vector<std::vector<double>> cand(X), ubv(X);
        std::vector<std::vector<int>> cact(X);
        for (int x = 0; x < X; ++x) {
            int n = static_cast<int>(sets_[set_base_[t] + group_[static_cast<std::size_t>(t) * X + x]].size() / Sz);
            cand[x].assign(n * Sz, 0.0);
            ubv[x].assign(n, 0.0);
            cact[x].assign(n, 0);
        }
        // Flatten (unit, point) work items.
        std::vector<int> item_base(units.size() + 1, 0);
        for (std::size_t u = 0; u < units.size(); ++u)
            item_base[u + 1] = item_base[u] + static_cast<int>(sets_[units[u].set].size() / Sz);
        const int n_items = item_base.back();
        const int chunk = 8;
        pool_.run((n_items + chunk - 1) / chunk, [&](int ci, int wid) {
            Scratch& sc = scratch[wid];
            for (int item = ci * chunk; item < std::min(n_items, (ci + 1) * chunk); ++item) {
                int u = static_cast<int>(std::upper_bound(item_base.begin(), item_base.end(), item) -
                                         item_base.begin()) - 1;
                int i = item - item_base[u];
                const Unit& un = units[u];
                const double* b = &sets_[un.set][i * Sz];
                sc.lbsum.assign(A, 0.0);
                sc.ubsum.assign(A, 0.0);
                sc.kstar.clear();
                // keys per action are needed again to build the vector: keep them
                std::vector<int>& keys_all = sc.keys_all;
                keys_all.clear();
                sc.keys_off.assign(A + 1, 0);
                for (int a = 0; a < A; ++a) {
                    successors(t, un.rep, a, b, sc.tau, sc.ys, sc.keys, true);
                    const int ns = static_cast<int>(sc.keys.size()) / 3;
                    double lbs = 0.0, ubs = 0.0;
                    for (int j = 0; j < ns; ++j) {
                        const int xp = sc.keys[3 * j];
                        const double* y = &sc.ys[j * Sz];
                        int k = 0;
                        const double v = lb_eval(t + 1, xp, y, &k);
                        if (sc.keys[3 * j + 2]) {
                            lbs += v;
                            ubs += ub_eval(t + 1, xp, y);
                        }
                        sc.kstar.push_back(k);
                        keys_all.push_back(xp);
                        keys_all.push_back(sc.keys[3 * j + 1]);
                    }
                    sc.lbsum[a] = lbs;
                    sc.ubsum[a] = ubs;
                    sc.keys_off[a + 1] = static_cast<int>(keys_all.size()) / 2;
                }
                const std::vector<int>& keys_off = sc.keys_off;
                // The future part of each action's vector, built lazily.
                sc.fut.assign(A * Sz, 0.0);
                sc.fut_done.assign(A, 0);
                for (int x : un.xs) {
                    double best = -kInf, ub = -kInf;
                    int abest = 0;
                    for (int a = 0; a < A; ++a) {
                        const double rb = dot(b, m_.R_vec(t, a, x), S);
                        const double v = rb + g_ * sc.lbsum[a];
                        if (v > best) {
                            best = v;
                            abest = a;
                        }
                        ub = std::max(ub, rb + g_ * sc.ubsum[a]);
                    }
                    double* fut = &sc.fut[abest * Sz];
                    if (!sc.fut_done[abest]) {
                        sc.fut_done[abest] = 1;
                        // alpha(s) = sum_{x'} sum_{s'} T[s, x', s'] w_{x'}(s'),
                        // w_{x'}(s') = sum_o Z[s', o] alpha*_{x',o}(s')
                        std::vector<double> w(Sz);
                        int j = keys_off[abest];
                        const int jend = keys_off[abest + 1];
                        while (j < jend) {
                            const int xp = keys_all[2 * j];
                            std::fill(w.begin(), w.end(), 0.0);
                            const double* zb = m_.Z_block(t, abest, xp);
                            const EpochX& nx = ex_[static_cast<std::size_t>(t + 1) * X + xp];
                            for (; j < jend && keys_all[2 * j] == xp; ++j) {
                                const int o = keys_all[2 * j + 1];
                                const double* al = &nx.alphas[static_cast<std::size_t>(sc.kstar[j]) * S];
                                for (int sp = 0; sp < S; ++sp)
                                    w[sp] += zb[static_cast<std::size_t>(sp) * O + o] * al[sp];
                            }
                            for (int s = 0; s < S; ++s) {
                                const double* row = m_.T_row(t, abest, un.rep, s) + static_cast<std::size_t>(xp) * S;
                                fut[s] += dot(row, w.data(), S);
                            }
                        }
                    }
                    const double* r = m_.R_vec(t, abest, x);
                    double* out = &cand[x][i * Sz];
                    for (int s = 0; s < S; ++s) out[s] = r[s] + g_ * fut[s];
                    cact[x][i] = abest;
                    ubv[x][i] = ub;
                }
            }
        });
        // Finalise each x: upper-bound structures, pruning of the lower-bound vectors.
        pool_.run(X, [&](int x, int) {
            EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
            const auto& pts = sets_[set_base_[t] + group_[static_cast<std::size_t>(t) * X + x]];
            const int n = static_cast<int>(pts.size() / Sz);
            const int na = A;
            auto fib_at = [&](const double* b) {
                double f = -kInf;
                for (int a = 0; a < na; ++a) f = std::max(f, dot(b, &e.fib[a * Sz], S));
                return f;
            };
            e.corner.assign(Sz, 0.0);
            for (int s = 0; s < S; ++s) e.corner[s] = std::min(ubv[x][s], fib_at(&pts[s * Sz]));
            e.sw_d.clear();
            e.sw_inv.clear();
            for (int i = S; i < n; ++i) {
                const double* b = &pts[i * Sz];
                const double v = std::min(ubv[x][i], fib_at(b));
                const double d = v - dot(b, e.corner.data(), S);
                if (d < -1e-12) {
                    e.sw_d.push_back(d);
                    for (int s = 0; s < S; ++s) e.sw_inv.push_back(b[s] > 0.0 ? 1.0 / b[s] : 0.0);
                }
            }
            // De-duplicate candidates (many points choose the same plan), then keep those that
            // are best at some point.
            std::vector<int> idx(n);
            for (int i = 0; i < n; ++i) idx[i] = i;
            const auto& cv = cand[x];
            auto less = [&](int i, int j) {
                if (cact[x][i] != cact[x][j]) return cact[x][i] < cact[x][j];
                return std::lexicographical_compare(&cv[i * Sz], &cv[i * Sz] + S, &cv[j * Sz], &cv[j * Sz] + S);
            };
            std::sort(idx.begin(), idx.end(), less);
            std::vector<int> uniq;
            for (int i : idx)
                if (uniq.empty() || less(uniq.back(), i)) uniq.push_back(i);
            const int D = static_cast<int>(uniq.size());
            std::vector<char> keep(D, 0);
            for (int i = 0; i < n; ++i) {
                const double* b = &pts[i * Sz];
                double best = -kInf;
                int jb = 0;
                for (int j = 0; j < D; ++j) {
                    double v = dot(b, &cv[uniq[j] * Sz], S);
                    if (v > best) {
                        best = v;
                        jb = j;
                    }
                }
                keep[jb] = 1;
            }
            e.alphas.clear();
            e.acts.clear();
            for (int j = 0; j < D; ++j)
                if (keep[j]) {
                    e.alphas.insert(e.alphas.end(), &cv[uniq[j] * Sz], &cv[uniq[j] * Sz] + S);
                    e.acts.push_back(cact[x][uniq[j]]);
                }
        });
    }
}

void Solver::sample(int n_traj, int pass, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> unif(0.0, 1.0);
    std::vector<double> tau, ys, b(S), best_ys;
    std::vector<int> keys, best_keys;
    for (int i = 0; i < n_traj; ++i) {
        // initial observed value
        double u = unif(rng), acc = 0.0;
        int x = X - 1;
        for (int xx = 0; xx < X; ++xx) {
            acc += m_.x0[xx];
            if (u < acc) {
                x = xx;
                break;
            }
        }
        while (m_.x0[x] <= 0.0 && x > 0) --x;
        std::copy(&m_.b0[static_cast<std::size_t>(x) * S], &m_.b0[static_cast<std::size_t>(x) * S] + S, b.begin());
        // Pass 0: half the trajectories follow the fast informed bound, half act at random.
        // Later passes: half follow the current lower-bound policy, half the upper bound and
        // move to the successor of largest weighted gap (HSVI-style excess uncertainty).
        const int mode = pass == 0 ? (i % 2) : 2 + (i % 2);
        for (int t = 0; t < H - 1; ++t) {
            int a = 0;
            if (mode == 1) {
                a = static_cast<int>(unif(rng) * A);
                if (a >= A) a = A - 1;
            } else if (mode == 0) {
                const EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
                double best = -kInf;
                for (int aa = 0; aa < A; ++aa) {
                    double v = dot(b.data(), &e.fib[aa * static_cast<std::size_t>(S)], S);
                    if (v > best) {
                        best = v;
                        a = aa;
                    }
                }
            } else if (mode == 2) {
                const EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
                double best = -kInf;
                for (int k = 0; k < e.K(); ++k) {
                    double v = dot(b.data(), &e.alphas[k * static_cast<std::size_t>(S)], S);
                    if (v > best) {
                        best = v;
                        a = e.acts[k];
                    }
                }
            } else {
                double best = -kInf;
                for (int aa = 0; aa < A; ++aa) {
                    successors(t, x, aa, b.data(), tau, ys, keys);
                    double v = dot(b.data(), m_.R_vec(t, aa, x), S);
                    for (std::size_t j = 0; j < keys.size() / 3; ++j)
                        v += g_ * ub_eval(t + 1, keys[3 * j], &ys[j * S]);
                    if (v > best) {
                        best = v;
                        a = aa;
                    }
                }
            }
            successors(t, x, a, b.data(), tau, ys, keys);
            const int ns = static_cast<int>(keys.size()) / 3;
            if (ns == 0) break;
            int pick = ns - 1;
            if (mode == 3) {
                double best = -kInf;
                for (int j = 0; j < ns; ++j) {
                    const double* y = &ys[j * static_cast<std::size_t>(S)];
                    double w = ub_eval(t + 1, keys[3 * j], y) - lb_eval(t + 1, keys[3 * j], y);
                    if (w > best) {
                        best = w;
                        pick = j;
                    }
                }
                if (!(best > 1e-12)) break;  // nothing left to learn below this point
            } else {
                double tot = 0.0;
                for (int j = 0; j < ns; ++j)
                    for (int s = 0; s < S; ++s) tot += ys[j * static_cast<std::size_t>(S) + s];
                double r = unif(rng) * tot, c = 0.0;
                for (int j = 0; j < ns; ++j) {
                    for (int s = 0; s < S; ++s) c += ys[j * static_cast<std::size_t>(S) + s];
                    if (r < c) {
                        pick = j;
                        break;
                    }
                }
            }
            const double* y = &ys[pick * static_cast<std::size_t>(S)];
            double p = 0.0;
            for (int s = 0; s < S; ++s) p += y[s];
            for (int s = 0; s < S; ++s) b[s] = y[s] / p;
            x = keys[3 * pick];
            add_sample(t + 1, x, b.data());
        }
    }
}

void Solver::record_result(FhResult& res) const {
    res.alphas.clear();
    res.actions.clear();
    res.offsets.assign(static_cast<std::size_t>(H) * X + 1, 0);
    for (int t = 0; t < H; ++t)
        for (int x = 0; x < X; ++x) {
            const EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
            res.alphas.insert(res.alphas.end(), e.alphas.begin(), e.alphas.end());
            res.actions.insert(res.actions.end(), e.acts.begin(), e.acts.end());
            res.offsets[static_cast<std::size_t>(t) * X + x + 1] = static_cast<long long>(res.actions.size());
        }
}

FhResult Solver::run() {
    const auto t_start = std::chrono::steady_clock::now();
    auto elapsed = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    };
    build_structure();
    build_fib();
    grid_.clear();
    if (c_.grid_resolution > 0) simplex_grid(S, c_.grid_resolution, grid_);
    grid_.insert(grid_.end(), c_.belief_points.begin(), c_.belief_points.end());
    samples_.assign(static_cast<std::size_t>(H) * X, {});
    for (int x = 0; x < X; ++x)
        if (m_.x0[x] > 0.0) add_sample(0, x, &m_.b0[static_cast<std::size_t>(x) * S]);
    std::mt19937_64 rng(c_.seed);

    FhResult res;
    double best_lb = -kInf, best_ub = kInf;
    const int n_pass = 1 + std::max(0, c_.n_refine);
    for (int pass = 0; pass < n_pass; ++pass) {
        sample(c_.n_samples, pass, rng);
        build_point_sets();
        backward_pass();
        double lb = 0.0, ub = 0.0;
        for (int x = 0; x < X; ++x) {
            if (!(m_.x0[x] > 0.0)) continue;
            const double* b = &m_.b0[static_cast<std::size_t>(x) * S];
            lb += m_.x0[x] * lb_eval(0, x, b);
            ub += m_.x0[x] * ub_eval(0, x, b);
        }
        long long nb = 0;
        for (int t = 0; t < H; ++t)
            for (int x = 0; x < X; ++x)
                nb += static_cast<long long>(sets_[set_base_[t] + group_[static_cast<std::size_t>(t) * X + x]].size() / S);
        res.n_beliefs = nb;
        if (lb >= best_lb) {
            best_lb = lb;
            record_result(res);
        }
        best_ub = std::min(best_ub, ub);
        res.n_passes = pass + 1;
        res.history.push_back(elapsed());
        res.history.push_back(best_lb);
        res.history.push_back(best_ub);
        if (best_ub - best_lb <= c_.target_gap) break;
    }
    res.lower_bound = best_lb;
    // Rounding can leave the upper bound a hair below the lower bound on converged points.
    res.upper_bound = std::max(best_ub, best_lb);
    res.gap = res.upper_bound - res.lower_bound;
    res.time_s = elapsed();
    return res;
}

void check_config(const FhModel& m, const FhConfig& c) {
    if (c.belief_points.size() % static_cast<std::size_t>(m.S) != 0)
        throw std::invalid_argument("belief_points must have n_hidden = " + std::to_string(m.S) +
                                    " columns");
    if (c.grid_resolution < 0)
        throw std::invalid_argument("grid_resolution must be >= 0; got " + std::to_string(c.grid_resolution));
    if (c.n_samples < 0) throw std::invalid_argument("n_samples must be >= 0; got " + std::to_string(c.n_samples));
    if (c.n_refine < 0) throw std::invalid_argument("n_refine must be >= 0; got " + std::to_string(c.n_refine));
    if (c.n_threads < 1) throw std::invalid_argument("n_threads must be >= 1; got " + std::to_string(c.n_threads));
    if (c.grid_resolution > 0) {
        // number of grid points C(r + S - 1, S - 1), capped to keep memory sane
        double n = 1.0;
        for (int k = 1; k < m.S; ++k) n = n * (c.grid_resolution + k) / k;
        if (n > 20000.0)
            throw std::invalid_argument("grid_resolution=" + std::to_string(c.grid_resolution) +
                                        " gives " + std::to_string(static_cast<long long>(n)) +
                                        " points per (t, x) for n_hidden=" + std::to_string(m.S) +
                                        "; at most 20000 allowed");
    }
}

}  // namespace

FhResult solve_fh(const FhModel& model, const FhConfig& config) {
    model.check_sizes();
    check_config(model, config);
    Solver solver(model, config);
    return solver.run();
}

std::vector<FhResult> solve_fh_many(const std::vector<FhModel>& models, const FhConfig& config,
                                    int n_threads) {
    if (n_threads < 1) throw std::invalid_argument("n_threads must be >= 1; got " + std::to_string(n_threads));
    const int n = static_cast<int>(models.size());
    std::vector<FhResult> out(n);
    if (n == 0) return out;
    // Threads over models; a model gets several threads only when models are fewer.
    const int n_workers = std::min(n_threads, n);
    FhConfig inner = config;
    inner.n_threads = std::max(1, n_threads / n_workers);
    std::vector<std::exception_ptr> errors(n);
    std::atomic<int> next{0};
    auto work = [&] {
        for (;;) {
            int i = next.fetch_add(1);
            if (i >= n) return;
            try {
                out[i] = solve_fh(models[i], inner);
            } catch (const std::invalid_argument& e) {
                // Name the model; bad input stays std::invalid_argument (ValueError).
                errors[i] = std::make_exception_ptr(
                    std::invalid_argument("models[" + std::to_string(i) + "]: " + e.what()));
            } catch (...) {
                errors[i] = std::current_exception();
            }
        }
    };
    std::vector<std::thread> threads;
    for (int w = 1; w < n_workers; ++w) threads.emplace_back(work);
    work();
    for (auto& th : threads) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
    return out;
}

}  // namespace fh
}  // namespace trim
