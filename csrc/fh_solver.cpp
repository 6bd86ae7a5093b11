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
// Upper bound: a time-indexed fast informed bound Q_t(a, x, s); then Bellman backups of the
// upper bound of epoch t+1 at the points of a Freudenthal grid over the hidden simplex (step
// 1/r, r = max(1, grid_resolution); r = 1 is the corners) and, with `sawtooth`, at the other
// belief points.  The bound of epoch t+1 is
//   U_{t+1}(x', y) = min( max_a y . Q_{t+1}(a, x'),  grid interpolation_{t+1,x'}(y),
//                         sawtooth_{t+1,x'}(y) ),
// the grid interpolation being linear in the simplex of the triangulation that contains y
// (Lovejoy 1991) and the sawtooth interpolating the backed-up values at the other points
// (Hauskrecht 2000); each is an upper bound of a convex function given upper bounds at its
// points.  All parts are positively homogeneous in y, so unnormalised successor beliefs are
// used directly and P(x', o | b, a) never needs to be divided out.
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
    // Small hidden spaces (TRIM: S = 3) dominate: fixed-size cases unroll.
    switch (n) {
        case 2: return a[0] * b[0] + a[1] * b[1];
        case 3: return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        case 4: return a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
        default: {
            double s = 0.0;
            for (int i = 0; i < n; ++i) s += a[i] * b[i];
            return s;
        }
    }
}

// The Freudenthal triangulation of the S-simplex with step 1/r (Lovejoy 1991).  Grid points
// are the compositions c of r into S parts (b = c / r), stored in lexicographic rank order.
// Linear interpolation inside the simplex of the triangulation that contains b costs
// O(S^2); for a convex function whose vertex values are upper bounds it is an upper bound.
class SimplexGrid {
   public:
    void init(int S, int r) {
        S_ = S;
        r_ = r;
        // N[k][m]: compositions of m into k parts
        std::vector<std::vector<double>> N(S + 1, std::vector<double>(r + 1, 0.0));
        N[0][0] = 1.0;
        for (int k = 1; k <= S; ++k)
            for (int m = 0; m <= r; ++m)
                for (int j = 0; j <= m; ++j) N[k][m] += N[k - 1][m - j];
        n_ = static_cast<int>(N[S][r]);
        // cum_[(i * (r+1) + rem) * (r+1) + c] = sum_{j < c} N[S-1-i][rem-j]
        cum_.assign(static_cast<std::size_t>(S) * (r + 1) * (r + 1), 0);
        for (int i = 0; i < S; ++i)
            for (int rem = 0; rem <= r; ++rem) {
                long long acc = 0;
                for (int c = 0; c <= r; ++c) {
                    cum_[(static_cast<std::size_t>(i) * (r + 1) + rem) * (r + 1) + c] = static_cast<int>(acc);
                    if (c <= rem) acc += static_cast<long long>(N[S - 1 - i][rem - c]);
                }
            }
        pts_.assign(static_cast<std::size_t>(n_) * S, 0.0);
        corner_.assign(S, 0);
        std::vector<int> c(S, 0);
        std::function<void(int, int)> rec = [&](int i, int left) {
            if (i == S - 1) {
                c[i] = left;
                const int k = rank(c.data());
                for (int s = 0; s < S; ++s) pts_[static_cast<std::size_t>(k) * S + s] = static_cast<double>(c[s]) / r;
                for (int s = 0; s < S; ++s)
                    if (c[s] == r) corner_[s] = k;
                return;
            }
            for (int v = 0; v <= left; ++v) {
                c[i] = v;
                rec(i + 1, left - v);
            }
        };
        rec(0, r);
    }
    int size() const { return n_; }
    int resolution() const { return r_; }
    const double* point(int k) const { return &pts_[static_cast<std::size_t>(k) * S_]; }
    int corner(int s) const { return corner_[s]; }

    // The simplex of the triangulation containing y / mass: up to S vertex ranks and
    // barycentric weights (zero weights dropped).  Returns the number of vertices.
    int locate(const double* y, double mass, int* ranks, double* lams) const {
        const int S = S_;
        double x[kMaxS], d[kMaxS];
        int v[kMaxS], p[kMaxS], comp[kMaxS];
        // x_i = r * sum_{j >= i} b_j, non-increasing from x_0 = r
        double acc = 0.0;
        for (int i = S - 1; i >= 1; --i) {
            acc += y[i];
            x[i] = std::min(static_cast<double>(r_), r_ * acc / mass);
        }
        x[0] = r_;
        for (int i = 0; i < S; ++i) {
            double f = std::floor(x[i]);
            v[i] = static_cast<int>(f);
            d[i] = x[i] - f;
        }
        // order 1..S-1 by decreasing d (insertion sort: S is small); index 0 (d = 0) last
        int n = 0;
        for (int i = 1; i < S; ++i) {
            int j = n++;
            while (j > 0 && d[p[j - 1]] < d[i]) {
                p[j] = p[j - 1];
                --j;
            }
            p[j] = i;
        }
        p[S - 1] = 0;
        int nv = 0;
        double prev = 1.0;
        for (int k = 0; k < S; ++k) {
            if (k > 0) v[p[k - 1]] += 1;
            const double dk = k < S - 1 ? d[p[k]] : 0.0;
            const double lam = prev - dk;  // lambda_0 = 1 - d_p0, lambda_k = d_p(k-1) - d_pk
            prev = dk;
            if (lam <= 0.0) continue;
            for (int i = 0; i < S; ++i) comp[i] = v[i] - (i + 1 < S ? v[i + 1] : 0);
            ranks[nv] = rank(comp);
            lams[nv] = lam;
            ++nv;
        }
        return nv;
    }

    // sum_k lambda_k vals[vertex_k] * mass for an unnormalised y of positive mass.
    double interpolate(const double* vals, const double* y, double mass) const {
        int ranks[kMaxS];
        double lams[kMaxS];
        const int nv = locate(y, mass, ranks, lams);
        double out = 0.0;
        for (int k = 0; k < nv; ++k) out += lams[k] * vals[ranks[k]];
        return out * mass;
    }

    static constexpr int kMaxS = 64;

   private:
    int rank(const int* c) const {
        int k = 0, rem = r_;
        for (int i = 0; i < S_ - 1; ++i) {
            k += cum_[(static_cast<std::size_t>(i) * (r_ + 1) + rem) * (r_ + 1) + c[i]];
            rem -= c[i];
        }
        return k;
    }
    int S_ = 0, r_ = 1, n_ = 0;
    std::vector<int> cum_, corner_;
    std::vector<double> pts_;
};

// Results of one (t, x) in one pass.
struct EpochX {
    std::vector<double> alphas;  // K * S
    std::vector<int> acts;       // K
    std::vector<double> fib;     // n_fib * S: fast informed bound vectors
    int n_fib = 0;
    std::vector<double> ugrid;   // upper bound at the grid points (rank order)
    std::vector<double> corner;  // S: upper bound at the corners (from ugrid)
    std::vector<double> sw_d;    // sawtooth points: v_i - b_i . corner (< 0)
    std::vector<double> sw_inv;  // n_sw * S: 1 / b_i(s), 0 where b_i(s) == 0
    int K() const { return static_cast<int>(acts.size()); }
    int n_sw() const { return static_cast<int>(sw_d.size()); }
};

// A unit of shared work at one epoch: a belief set and the observed values that use it.
struct Unit {
    int rep = 0;          // x whose T slice is used
    std::vector<int> xs;  // observed values computed from this unit
    int set = 0;          // index of the belief set (per epoch)
};

// Successor (x', o) of a unit and action: M[s][s'] = T[s, x', s'] Z[s', o], its row sums and
// the projections G[k] = M alpha_k of the vectors of Gamma_{t+1, x'}.
// Successors whose M are proportional (M = scale * M_rep; TRIM: the token bins of the next
// draft) have the same normalised successor belief: the grid simplex that contains it is
// located once per shape.
struct Succ {
    int xp = 0, o = 0, K = 0, k_uniform = 0;
    std::size_t m_off = 0, g_off = 0;  // into SuccTable::M / SuccTable::G
    int shape = 0;                     // index into SuccTable::shape_rep
    double scale = 1.0;                // M = scale * M of the shape's representative
};
struct SuccTable {
    std::vector<Succ> items;
    std::vector<double> M, m1, G;  // M: S*S per item; m1: S per item; G: K*S per item
    std::vector<int> shape_rep;    // representative item of each shape
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
    void build_succ(int t, const Unit& un, int a, SuccTable& tab) const;
    void sample(int n_traj, int pass, std::mt19937_64& rng);
    void add_sample(int t, int x, const double* b) {
        auto& v = samples_[static_cast<std::size_t>(t) * X + x];
        v.insert(v.end(), b, b + S);
    }
    double ub_eval(int t1, int xp, const double* y) const;
    // The same with the grid simplex of y already located (mass = sum of y).
    double ub_eval_at(int t1, int xp, const double* y, double mass, const int* ranks,
                      const double* lams, int nv) const;
    double lb_eval(int t1, int xp, const double* y, int* arg = nullptr) const;
    // Upper-bound backup at (t, x, b) from the bound of epoch t+1.
    double ub_backup(int t, int x, const double* b) const;
    // Unnormalised successor beliefs of (t, x, b, a): for each reachable x' and o with
    // positive probability, y (S numbers) appended to `ys` and (x', o, 1) to `keys`.  With
    // `all`, also the pairs (x', o) reachable from some hidden state but of probability zero
    // under b, as (x', o, 0) with y = the successor of the uniform belief.
    void successors(int t, int x, int a, const double* b, std::vector<double>& tau,
                    std::vector<double>& ys, std::vector<int>& keys, bool all = false) const;
    void record_result(FhResult& res) const;

    const FhModel& m_;
    const FhConfig& c_;
    const int H, A, X, S, O;
    const double g_;
    WorkerPool pool_;
    SimplexGrid grid_;

    std::vector<std::vector<int>> reach_;   // [(t*A + a)*X + x] -> x' with T mass
    std::vector<std::vector<int>> zobs_;    // [(t*A + a)*X + x'] -> o with Z mass
    std::vector<int> group_;                // [t*X + x] -> group id at epoch t
    std::vector<int> n_groups_;             // [t]
    std::vector<double> extra_;             // user belief points, normalised
    std::vector<std::vector<double>> samples_;  // [t*X + x] sampled beliefs
    // Belief set of (t, group) at sets_[set_base_[t] + group]: the grid points (rank order)
    // when lb_grid_, then the other points (corners first when there is no grid).
    std::vector<std::vector<double>> sets_;
    std::vector<int> set_base_;
    bool lb_grid_ = false;                  // the grid points belong to the belief sets
    std::vector<EpochX> ex_;                // [(H+1) * X]
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
        e.n_fib = 1;
        e.corner.assign(rf, rf + S);
        e.alphas.assign(rf, rf + S);
        e.acts.assign(1, -1);
        e.ugrid.resize(grid_.size());
        for (int k = 0; k < grid_.size(); ++k) e.ugrid[k] = dot(grid_.point(k), rf, S);
    }
    for (int t = H - 1; t >= 0; --t) {
        for (int x = 0; x < X; ++x) {
            EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
            e.fib.assign(static_cast<std::size_t>(A) * S, 0.0);
            e.n_fib = A;
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
    double mass = 0.0;
    for (int s = 0; s < S; ++s) mass += y[s];
    if (!(mass > 0.0)) return 0.0;
    int ranks[SimplexGrid::kMaxS];
    double lams[SimplexGrid::kMaxS];
    const int nv = grid_.locate(y, mass, ranks, lams);
    return ub_eval_at(t1, xp, y, mass, ranks, lams, nv);
}

double Solver::ub_eval_at(int t1, int xp, const double* y, double mass, const int* ranks,
                          const double* lams, int nv) const {
    const EpochX& e = ex_[static_cast<std::size_t>(t1) * X + xp];
    const int na = e.n_fib;
    double f = -kInf;
    for (int a = 0; a < na; ++a) f = std::max(f, dot(y, &e.fib[static_cast<std::size_t>(a) * S], S));
    double gi = 0.0;
    for (int k = 0; k < nv; ++k) gi += lams[k] * e.ugrid[ranks[k]];
    double u = std::min(f, gi * mass);
    const int n = e.n_sw();
    if (n > 0) {
        const double lin = dot(y, e.corner.data(), S);
        for (int i = 0; i < n; ++i) {
            const double* inv = &e.sw_inv[static_cast<std::size_t>(i) * S];
            double phi = kInf;
            for (int s = 0; s < S; ++s) {
                const double r = inv[s] > 0.0 ? y[s] * inv[s] : kInf;
                phi = r < phi ? r : phi;
            }
            u = std::min(u, lin + phi * e.sw_d[i]);
        }
    }
    return u;
}

double Solver::ub_backup(int t, int x, const double* b) const {
    std::vector<double> tau, ys;
    std::vector<int> keys;
    double best = -kInf;
    for (int a = 0; a < A; ++a) {
        successors(t, x, a, b, tau, ys, keys);
        double v = dot(b, m_.R_vec(t, a, x), S);
        for (std::size_t j = 0; j < keys.size() / 3; ++j)
            v += g_ * ub_eval(t + 1, keys[3 * j], &ys[j * S]);
        best = std::max(best, v);
    }
    return best;
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

void Solver::build_point_sets() {
    // One belief set per (t, group): the grid points in rank order (the corners at least),
    // then the sorted, de-duplicated union of the user points and of the beliefs sampled at
    // any x of the group.  Sorting makes the sets independent of thread scheduling.
    set_base_.assign(H + 1, 0);
    for (int t = 0; t < H; ++t) set_base_[t + 1] = set_base_[t] + n_groups_[t];
    sets_.assign(set_base_[H], {});
    pool_.run(set_base_[H], [&](int si, int) {
        int t = static_cast<int>(std::upper_bound(set_base_.begin(), set_base_.end(), si) -
                                 set_base_.begin()) - 1;
        int gidx = si - set_base_[t];
        std::vector<double> pts(extra_);
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
        out.clear();
        for (int k = 0; k < grid_.size(); ++k) out.insert(out.end(), grid_.point(k), grid_.point(k) + S);
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

void Solver::build_succ(int t, const Unit& un, int a, SuccTable& tab) const {
    const std::size_t Sz = static_cast<std::size_t>(S);
    tab.items.clear();
    tab.M.clear();
    tab.m1.clear();
    tab.G.clear();
    tab.shape_rep.clear();
    for (int xp : reach_[(static_cast<std::size_t>(t) * A + a) * X + un.rep]) {
        const double* zb = m_.Z_block(t, a, xp);
        const EpochX& nx = ex_[static_cast<std::size_t>(t + 1) * X + xp];
        const int K = nx.K();
        for (int o : zobs_[(static_cast<std::size_t>(t) * A + a) * X + xp]) {
            const std::size_t m_off = tab.M.size();
            tab.M.resize(m_off + Sz * Sz);
            double tot = 0.0;
            for (int s = 0; s < S; ++s) {
                const double* row = m_.T_row(t, a, un.rep, s) + static_cast<std::size_t>(xp) * S;
                double rs = 0.0;
                for (int sp = 0; sp < S; ++sp) {
                    const double v = row[sp] * zb[static_cast<std::size_t>(sp) * O + o];
                    tab.M[m_off + s * Sz + sp] = v;
                    rs += v;
                }
                tab.m1.push_back(rs);
                tot += rs;
            }
            if (!(tot > 0.0)) {  // (x', o) unreachable from every hidden state
                tab.M.resize(m_off);
                tab.m1.resize(tab.m1.size() - Sz);
                continue;
            }
            Succ it;
            it.xp = xp;
            it.o = o;
            it.K = K;
            it.m_off = m_off;
            it.shape = -1;
            for (std::size_t h = 0; h < tab.shape_rep.size() && it.shape < 0; ++h) {
                const Succ& rep = tab.items[tab.shape_rep[h]];
                const double* Mr = &tab.M[rep.m_off];
                const double* Mi = &tab.M[m_off];
                double tr = 0.0;
                for (std::size_t q = 0; q < Sz * Sz; ++q) tr += Mr[q];
                const double c = tot / tr;
                bool same = true;
                for (std::size_t q = 0; q < Sz * Sz && same; ++q)
                    same = std::fabs(Mi[q] - c * Mr[q]) <= 1e-14 * std::fabs(Mi[q]);
                if (same) {
                    it.shape = static_cast<int>(h);
                    it.scale = c;
                }
            }
            if (it.shape < 0) {
                it.shape = static_cast<int>(tab.shape_rep.size());
                it.scale = 1.0;
                tab.shape_rep.push_back(static_cast<int>(tab.items.size()));
            }
            it.g_off = tab.G.size();
            tab.G.resize(it.g_off + static_cast<std::size_t>(K) * Sz);
            double best_u = -kInf;
            for (int k = 0; k < K; ++k) {
                const double* al = &nx.alphas[static_cast<std::size_t>(k) * Sz];
                double* gk = &tab.G[it.g_off + k * Sz];
                double su = 0.0;
                for (int s = 0; s < S; ++s) {
                    gk[s] = dot(&tab.M[m_off + s * Sz], al, S);
                    su += gk[s];
                }
                // a successor impossible under the belief still needs a continuation for the
                // vector to be a plan's value elsewhere: take the best at the uniform belief
                if (su > best_u) {
                    best_u = su;
                    it.k_uniform = k;
                }
            }
            tab.items.push_back(it);
        }
    }
}

void Solver::backward_pass() {
    const std::size_t Sz = static_cast<std::size_t>(S);
    const int n_grid = grid_.size();
    struct Scratch {
        std::vector<double> lbsum, ubsum, fut, y, ymass, lams;
        std::vector<int> kstar, koff, ranks, nv;
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
        const int nu = static_cast<int>(units.size());
        std::vector<SuccTable> tabs(static_cast<std::size_t>(nu) * A);
        pool_.run(nu * A, [&](int i, int) { build_succ(t, units[i / A], i % A, tabs[i]); });

        std::vector<std::vector<double>> cand(X), ubv(X);
        std::vector<std::vector<int>> cact(X);
        for (int x = 0; x < X; ++x) {
            std::size_t n = sets_[set_base_[t] + group_[static_cast<std::size_t>(t) * X + x]].size() / Sz;
            cand[x].assign(n * Sz, 0.0);
            ubv[x].assign(n, kInf);
            cact[x].assign(n, 0);
        }
        std::vector<int> item_base(nu + 1, 0);
        for (int u = 0; u < nu; ++u)
            item_base[u + 1] = item_base[u] + static_cast<int>(sets_[units[u].set].size() / Sz);
        const int n_items = item_base.back();
        const int chunk = 8;
        pool_.run((n_items + chunk - 1) / chunk, [&](int ci, int wid) {
            Scratch& sc = scratch[wid];
            for (int item = ci * chunk; item < std::min(n_items, (ci + 1) * chunk); ++item) {
                const int u = static_cast<int>(std::upper_bound(item_base.begin(), item_base.end(), item) -
                                               item_base.begin()) - 1;
                const int i = item - item_base[u];
                const Unit& un = units[u];
                const double* b = &sets_[un.set][i * Sz];
                const bool do_ub = i < n_grid || c_.sawtooth;
                sc.lbsum.assign(A, 0.0);
                sc.ubsum.assign(A, 0.0);
                sc.kstar.clear();
                sc.koff.assign(A + 1, 0);
                for (int a = 0; a < A; ++a) {
                    const SuccTable& tab = tabs[static_cast<std::size_t>(u) * A + a];
                    double lbs = 0.0, ubs = 0.0;
                    const std::size_t ni = tab.items.size();
                    if (do_ub) {
                        // successor belief of each shape and its grid simplex
                        const std::size_t nh = tab.shape_rep.size();
                        sc.y.assign(nh * Sz, 0.0);
                        sc.ymass.assign(nh, 0.0);
                        sc.ranks.resize(nh * Sz);
                        sc.lams.resize(nh * Sz);
                        sc.nv.assign(nh, 0);
                        for (std::size_t h = 0; h < nh; ++h) {
                            const double* M = &tab.M[tab.items[tab.shape_rep[h]].m_off];
                            double* y = &sc.y[h * Sz];
                            for (int s = 0; s < S; ++s) {
                                if (b[s] == 0.0) continue;
                                for (int sp = 0; sp < S; ++sp) y[sp] += b[s] * M[s * Sz + sp];
                            }
                            double mass = 0.0;
                            for (int sp = 0; sp < S; ++sp) mass += y[sp];
                            sc.ymass[h] = mass;
                            if (mass > 0.0)
                                sc.nv[h] = grid_.locate(y, mass, &sc.ranks[h * Sz], &sc.lams[h * Sz]);
                        }
                    }
                    for (std::size_t j = 0; j < ni; ++j) {
                        const Succ& it = tab.items[j];
                        const double mass = dot(b, &tab.m1[it.m_off / Sz], S);
                        int kb = it.k_uniform;
                        if (mass > 0.0) {
                            double best = -kInf;
                            const double* G = &tab.G[it.g_off];
                            for (int k = 0; k < it.K; ++k) {
                                const double v = dot(b, G + k * Sz, S);
                                if (v > best) {
                                    best = v;
                                    kb = k;
                                }
                            }
                            lbs += best;
                            const int h = it.shape;
                            if (do_ub && sc.ymass[h] > 0.0) {
                                // U is positively homogeneous: U(scale * y_rep) = scale * U(y_rep)
                                ubs += it.scale * ub_eval_at(t + 1, it.xp, &sc.y[h * Sz], sc.ymass[h],
                                                             &sc.ranks[h * Sz], &sc.lams[h * Sz], sc.nv[h]);
                            }
                        }
                        sc.kstar.push_back(kb);
                    }
                    sc.lbsum[a] = lbs;
                    sc.ubsum[a] = ubs;
                    sc.koff[a + 1] = static_cast<int>(sc.kstar.size());
                }
                // The future part of each action's vector, built lazily and shared by the
                // observed values of the unit: sum over successors of G[k*].
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
                        const SuccTable& tab = tabs[static_cast<std::size_t>(u) * A + abest];
                        for (std::size_t j = 0; j < tab.items.size(); ++j) {
                            const double* gk = &tab.G[tab.items[j].g_off + sc.kstar[sc.koff[abest] + j] * Sz];
                            for (int s = 0; s < S; ++s) fut[s] += gk[s];
                        }
                    }
                    const double* r = m_.R_vec(t, abest, x);
                    double* out = &cand[x][i * Sz];
                    for (int s = 0; s < S; ++s) out[s] = r[s] + g_ * fut[s];
                    cact[x][i] = abest;
                    if (do_ub) ubv[x][i] = ub;
                }
            }
        });
        // Finalise each x: upper-bound structures, pruning of the lower-bound vectors.
        pool_.run(X, [&](int x, int) {
            EpochX& e = ex_[static_cast<std::size_t>(t) * X + x];
            const auto& pts = sets_[set_base_[t] + group_[static_cast<std::size_t>(t) * X + x]];
            const int n = static_cast<int>(pts.size() / Sz);
            auto fib_at = [&](const double* b) {
                double f = -kInf;
                for (int a = 0; a < A; ++a) f = std::max(f, dot(b, &e.fib[a * Sz], S));
                return f;
            };
            e.ugrid.resize(n_grid);
            for (int k = 0; k < n_grid; ++k) e.ugrid[k] = std::min(ubv[x][k], fib_at(&pts[k * Sz]));
            e.corner.resize(Sz);
            for (int s = 0; s < S; ++s) e.corner[s] = e.ugrid[grid_.corner(s)];
            e.sw_d.clear();
            e.sw_inv.clear();
            if (c_.sawtooth) {
                for (int i = n_grid; i < n; ++i) {
                    const double* b = &pts[i * Sz];
                    const double here = std::min(fib_at(b), grid_.interpolate(e.ugrid.data(), b, 1.0));
                    const double v = ubv[x][i];
                    if (!(v < here - 1e-12)) continue;  // adds nothing to the grid bound
                    const double d = v - dot(b, e.corner.data(), S);
                    if (!(d < 0.0)) continue;
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
                    const double v = dot(b, &cv[uniq[j] * Sz], S);
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
    grid_.init(S, std::max(1, c_.grid_resolution));
    build_fib();
    extra_ = c_.belief_points;
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
            ub += m_.x0[x] * std::min(ub_backup(0, x, b), ub_eval(0, x, b));
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
