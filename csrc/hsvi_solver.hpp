// HSVI2/SARSOP-style anytime point-based solver for discounted (or episodic, discount 1)
// infinite-horizon POMDPs.  Pure C++17: no Python header (see STYLE.md).
//
// Bounds kept:
//   lower bound  V_L(b) = max_k alpha_k . b, initialised with the best blind policy
//                (alpha_a = R_a + gamma T_a alpha_a for each action a), improved by
//                point-based backups at sampled beliefs; the set is kept closed under
//                the backups' successor links, so V_L is the value of the greedy
//                policy of the returned vectors (see prune_alphas);
//   upper bound  V_U(b) = min(FIB(b), sawtooth(b)), where FIB is the fast informed bound
//                Q(a,s) = R(a,s) + gamma sum_o max_a' sum_s' T(s'|s,a) Z(o|s',a) Q(a',s'),
//                and the sawtooth interpolation runs over the corner values
//                V_c(s) = max_a Q(a,s) and the belief points (b_i, v_i) produced by
//                backups: V_U(b) = V_c.b - max_i c_i(b) (V_c.b_i - v_i),
//                c_i(b) = min_{s in supp b_i} b(s) / b_i(s).
// Beliefs are sampled depth first from b0 (HSVI2): at each node take the action with the
// best upper bound and the observation with the largest weighted excess uncertainty
// p(o|b,a) (V_U - V_L)(tau(b,a,o)) - eps gamma^{-(t+1)}; both bounds are backed up along
// the path on the way back.
//
// Memory: only the beliefs of expanded nodes are stored; a leaf keeps its cached bounds and
// an identity (two 64-bit hashes of its quantised belief and its support size) and its belief
// is recomputed from its parent's when the parent's backup needs it.  Everything that grows
// (nodes, beliefs, per-action slots, children, alpha blocks) lives in append-only chunks, so
// growth never copies.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pomdp.hpp"

namespace trim {

struct HsviConfig {
    double time_limit = 30.0;     // seconds of wall time (<= 0: no limit)
    double target_gap = 1e-3;     // stop when V_U(b0) - V_L(b0) <= target_gap
    long long max_iterations = -1;  // trials from b0 (< 0: no limit)
    double max_memory_mb = 4096;  // solver storage (alpha vectors, beliefs, bound points)
    int n_threads = 1;            // threads used by the initial bounds (FIB, blind policy)
    double tol = 1e-6;            // accepted |row sum - 1| of T, Z and b0 (then renormalised)
    // Store the lower-bound vectors in single precision, each entry rounded down (so every
    // stored vector is still <= the backup it came from, and the bound stays the value of
    // the returned policy): half the memory for large models.  Needs a discounted model
    // with max|R| / (1 - discount) < 1e30.
    bool single_alphas = false;
};

// Latest progress snapshot, written by the solver and read by another thread.
struct HsviProgress {
    std::mutex mutex;
    double time = 0, lb = 0, ub = 0;
    long long n_alpha = 0, iteration = 0;
    bool fresh = false;
};

// An allocator whose resize leaves doubles uninitialised: a large buffer filled row by row
// then becomes resident as it is written, not all at once when allocated (a zero-filled
// std::vector touches every page up front).
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = DefaultInitAllocator<U>;
    };
    using std::allocator<T>::allocator;
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};
template <class T>
using RowBuffer = std::vector<T, DefaultInitAllocator<T>>;

// The storage of kLanes lower-bound vectors.  A large block is mapped from the OS directly,
// so that freeing it (pruning, moving the result out) returns its memory at once: malloc
// keeps freed large blocks on its own lists once its dynamic mmap threshold has risen above
// their size, and the result, allocated while the store is freed, then came on top of it
// (RockSample[7,8]: a peak of store + result instead of one of them).
class AlphaBlock {
   public:
    explicit AlphaBlock(std::size_t bytes);  // zero-filled
    AlphaBlock(AlphaBlock&& o) noexcept : p_(o.p_), bytes_(o.bytes_), mapped_(o.mapped_) {
        o.p_ = nullptr;
    }
    AlphaBlock& operator=(AlphaBlock&& o) noexcept;
    AlphaBlock(const AlphaBlock&) = delete;
    AlphaBlock& operator=(const AlphaBlock&) = delete;
    ~AlphaBlock() { release(); }
    void release();
    void* data() const { return p_; }

   private:
    void* p_ = nullptr;
    std::size_t bytes_ = 0;
    bool mapped_ = false;
};

struct HsviResult {
    int n_states = 0;
    // K * n_states, row major: `alphas` in double precision, or `alphas_single` when the
    // solver stored single-precision vectors (HsviConfig::single_alphas; the other is empty).
    RowBuffer<double> alphas;
    RowBuffer<float> alphas_single;
    bool single = false;
    std::vector<int> actions;    // K
    double lower_bound = 0, upper_bound = 0, gap = 0, time_s = 0;
    long long iterations = 0, n_beliefs = 0;
    std::vector<double> history;  // N * 5: time, lb, ub, n_alpha, iteration
    bool interrupted = false;
    double memory_mb = 0;  // peak of the solver's own storage accounting
};

// One backup at a belief against a given alpha set and the FIB upper bound (for tests:
// compared with a slow pure-Python backup).
struct HsviBackupCheck {
    std::vector<double> alpha;    // the backed-up vector of the best action
    int action = -1;
    std::vector<double> q_lower;  // Q_L(b, a) for each action
    std::vector<double> q_upper;  // Q_U(b, a) with V_U = FIB at the children
    std::vector<double> fib;      // FIB Q(a, s), A * S
};

// Append-only storage in chunks of 2^log2 elements: growing it never moves what is there.
// A std::vector doubles by copying, so while it grows the old and the new block are both
// resident (its peak is ~2x its size), and the freed blocks fragment the heap; the belief
// tree only grows, so chunks lose nothing.  grow(n) hands out n contiguous slots (a run never
// straddles two chunks), so &a[i] can be read as an array of n.
template <class T>
class Arena {
   public:
    void init(int log2) {
        log2_ = log2;
        mask_ = (std::int64_t{1} << log2) - 1;
    }
    T& operator[](std::int64_t i) { return chunks_[i >> log2_][i & mask_]; }
    const T& operator[](std::int64_t i) const { return chunks_[i >> log2_][i & mask_]; }
    std::int64_t size() const { return size_; }
    std::int64_t grow(std::int64_t n) {
        if (n > mask_ + 1) throw std::logic_error("Arena::grow: run longer than a chunk");
        if (n <= 0) return size_;
        if ((size_ & mask_) + n > mask_ + 1) size_ = (size_ + mask_) & ~mask_;
        const std::int64_t at = size_;
        size_ += n;
        while (static_cast<std::int64_t>(chunks_.size()) << log2_ < size_)
            chunks_.emplace_back(new T[static_cast<std::size_t>(mask_ + 1)]());
        return at;
    }
    void push_back(const T& v) { (*this)[grow(1)] = v; }
    void clear() {
        chunks_.clear();
        chunks_.shrink_to_fit();
        size_ = 0;
    }
    double bytes() const {
        return static_cast<double>(chunks_.size()) * static_cast<double>(mask_ + 1) * sizeof(T);
    }

   private:
    std::vector<std::unique_ptr<T[]>> chunks_;
    std::int64_t size_ = 0, mask_ = 0;
    int log2_ = 0;
};

class HsviSolver {
   public:
    HsviSolver(Pomdp model, const HsviConfig& config);
    // Runs until the target gap, the time limit, the iteration limit or `stop` is set.
    // `progress` (may be null) receives a snapshot after each trial.  Once only: it hands
    // its vectors over to the result and frees its belief tree.
    HsviResult solve(const std::atomic<bool>* stop = nullptr, HsviProgress* progress = nullptr);

    static HsviBackupCheck backup_at(const Pomdp& model, const std::vector<double>& alphas,
                                     const std::vector<int>& actions,
                                     const std::vector<double>& b);

    // Exposed for tests: the initial bounds.
    const std::vector<double>& blind_alphas() const { return blind_; }
    const std::vector<double>& fib_q() const { return fib_; }

   private:
    struct Node {
        std::int64_t bel_off = -1;  // into bel_idx_/bel_val_/bel_inv_; -1: not stored (a leaf)
        std::uint64_t h2 = 0;       // second belief hash (identity of a leaf, see add_node)
        int supp = 0;
        int point = -1;            // current upper-bound point of this node (-1: none)
        double lb = 0, ub = 0;
        int lb_alpha = -1;         // argmax alpha of the cached lower bound
        int lb_stamp = 0;          // alphas [0, lb_stamp) already taken into account
        int ub_stamp = 0;          // points [0, ub_stamp) already taken into account
        std::uint32_t ub_epoch = 0;
        std::int64_t blk = -1;     // into act_ (A slots) once the node is backed up
    };
    // Per (expanded node, action): R(b, a), the cached Q_U(b, a) and the children's ids.
    struct ActSlot {
        double r = 0, qub = 0;
        std::int64_t child_off = -1;  // into child_ (-1: children not listed yet)
        int n_child = 0;
    };
    struct Child {
        int id, o;
    };
    // Children beliefs of one action of the node being backed up (recomputed, not stored).
    struct ChildBeliefs {
        bool valid = false;
        std::vector<int> idx, off;  // child k: idx/val[off[k], off[k+1])
        std::vector<double> val, p;  // p[k] = p(o_k | b, a)
    };

    // --- set-up -----------------------------------------------------------------
    void check_model() const;
    void normalise_model();
    bool should_stop() const;
    void build_sparse();
    void init_blind();
    void init_fib();
    // --- beliefs ----------------------------------------------------------------
    int add_node(const int* idx, const double* val, int supp, bool store);
    void materialise(int n, const int* idx, const double* val);
    void ensure_block(int n);
    const ChildBeliefs& children(int n, int a);
    double child_lower(const ChildBeliefs& sc, int k, int c);
    double child_upper(const ChildBeliefs& sc, int k, int c);
    double q_value(int n, int a, bool upper_bound);
    // --- bounds -----------------------------------------------------------------
    double lower_at(Node& nd, const int* idx, const double* val);
    template <class E>
    void lower_scan(Node& nd, const int* idx, const double* val);
    double upper_at(Node& nd, const int* idx, const double* val);
    double lower(int n);
    double upper(int n);
    double sawtooth_dense(const double* bdense, const int* idx, int supp, int from_point) const;
    void backup(int n, bool lower_too);
    // succ: O indices of the vectors the new one was backed up from (one per observation),
    // or nullptr for a vector with no recorded successors (given from outside).
    void add_alpha(const double* alpha, int action, const int* succ);
    void set_point(int n, double v);
    void prune_alphas();
    void prune_points();
    void check_memory();
    double memory_bytes() const;
    void trial(double eps);
    void release_tree();
    bool solved_ = false;

    Pomdp m_;  // own copy, rows renormalised
    HsviConfig cfg_;
    int S_, A_, O_;
    double gamma_;
    Csr T_;  // row (a*S + s): (s', T(s'|s,a))
    Csr Z_;  // row (a*S + s'): (o, Z(o|s',a))
    std::vector<double> blind_;  // A * S (only actions whose evaluation converged are used)
    std::vector<double> fib_;    // A * S
    std::vector<double> corner_;  // S

    // lower bound: alpha vectors
    std::vector<int> alpha_act_;
    // K * O: alpha_succ_[k*O + o] is the vector alpha_k was backed up from for observation o
    // (the blind vectors name themselves; -1: none recorded).  Pruning keeps this set closed,
    // which is what makes max_k alpha_k . b the value of a policy (see prune_alphas).
    std::vector<int> alpha_succ_;
    // The same vectors in blocks of kLanes, state-major within a block:
    // alpha_t_[(blk * S + s) * kLanes + lane] = alpha_{blk * kLanes + lane}(s).
    static constexpr int kLanes = 16;
    static constexpr int kLaneMin = 4;
    // One allocation per block, so adding vectors never copies the others.  (The only copy:
    // a row-major one doubled the vectors' memory.)  Entries are double, or float when
    // single_ (HsviConfig::single_alphas).
    std::vector<AlphaBlock> alpha_blk_;
    bool single_ = false;
    std::size_t alpha_elem_ = sizeof(double);
    double alpha_at(int k, int s) const {
        const std::size_t i = static_cast<std::size_t>(s) * kLanes + k % kLanes;
        const void* b = alpha_blk_[k / kLanes].data();
        return single_ ? static_cast<double>(static_cast<const float*>(b)[i])
                       : static_cast<const double*>(b)[i];
    }
    // Stores v, rounded down in single precision (never above the value it stands for).
    void alpha_set(int k, int s, double v);
    template <class E>
    RowBuffer<E> take_alpha_rows();  // K * S, row major; empties the store
    int n_alpha_ = 0;
    int alpha_at_last_prune_ = 0;

    // upper bound: points (node, value, phi = V_c.b - v); dead points have node < 0
    std::vector<int> pt_node_;
    std::vector<double> pt_phi_;
    std::vector<double> pt_val_;
    int n_live_points_ = 0;
    int points_at_last_prune_ = 0;
    std::uint32_t ub_epoch_ = 1;

    // belief tree
    Arena<Node> nodes_;
    Arena<int> bel_idx_;  // bel_idx_/bel_val_/bel_inv_ grow in step: same offsets
    Arena<double> bel_val_;
    Arena<double> bel_inv_;  // 1 / bel_val_ (sawtooth ratios without divisions)
    Arena<ActSlot> act_;
    Arena<Child> child_;
    std::vector<Child> new_children_;
    std::vector<ChildBeliefs> scr_;  // A, for node scr_node_
    int scr_node_ = -1;
    std::vector<char> evaluated_;
    int ub_action_ = -1;
    std::unordered_multimap<std::uint64_t, int> node_hash_;

    // scratch (sized once; backups do not allocate)
    std::vector<double> dense_, pred_, newalpha_, w_, qlb_, qub_;
    std::vector<int> touched_, best_o_;
    std::vector<std::vector<int>> bucket_idx_;
    std::vector<std::vector<double>> bucket_val_;
    std::vector<int> path_;
    const std::atomic<bool>* stop_ = nullptr;
    std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
    bool force_alpha_ = false;  // backup_at: always emit the backed-up vector
    double peak_mb_ = 0.0;
};

}  // namespace trim
