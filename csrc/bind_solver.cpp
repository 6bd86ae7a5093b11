// Bindings of the point-based solver (csrc/hsvi_solver.hpp): _core.solve_pomdp.
// The solver runs on a worker thread with the GIL released; this thread wakes every 50 ms,
// briefly takes the GIL to poll Ctrl-C (PyErr_CheckSignals) and to call the progress
// callback (at most every 0.5 s), and on KeyboardInterrupt asks the solver to stop, which
// returns the best policy found so far with interrupted=True.
#include <atomic>
#include <chrono>
#include <exception>
#include <future>
#include <optional>
#include <thread>

#include "bind_common.hpp"
#include "hsvi_solver.hpp"

using namespace trim_bind;

namespace {

// T and Z: dense arrays or compressed-row tuples (ptr, idx, val, n_cols); the solver holds
// compressed rows either way, built straight from the NumPy buffers (no dense copy).
py::dict solve_pomdp(py::object T, py::object Z, DArray R, double discount, DArray b0,
                     double time_limit, double target_gap, long long max_iterations,
                     double max_memory_mb, int n_threads, py::object progress, double tol,
                     bool single_alphas) {
    trim::Pomdp model = pomdp_from_py(T, Z, R, discount, b0, true);
    const py::ssize_t A = model.n_actions, S = model.n_states, O = model.n_obs;
    if (A == 0 || S == 0 || O == 0)
        throw py::value_error("model must have at least one state, action and observation");
    if (!(time_limit > 0.0)) throw py::value_error("time_limit must be > 0");
    if (!(tol >= 0.0 && tol < 1.0)) throw py::value_error("tol must be in [0, 1)");
    if (n_threads < 1) throw py::value_error("n_threads must be >= 1");

    trim::HsviConfig cfg;
    cfg.time_limit = time_limit;
    cfg.target_gap = target_gap;
    cfg.max_iterations = max_iterations;
    cfg.max_memory_mb = max_memory_mb;
    cfg.n_threads = n_threads;
    cfg.tol = tol;
    cfg.single_alphas = single_alphas;

    trim::HsviResult res;
    std::exception_ptr solver_error;
    std::optional<py::error_already_set> py_error;
    bool user_interrupt = false;
    {
        // Model errors surface here, before any thread starts.
        trim::HsviSolver solver(std::move(model), cfg);
        std::atomic<bool> stop{false};
        trim::HsviProgress prog;
        py::gil_scoped_release release;
        auto fut = std::async(std::launch::async, [&] { res = solver.solve(&stop, &prog); });
        auto last_call = std::chrono::steady_clock::now() - std::chrono::seconds(1);
        while (fut.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
            py::gil_scoped_acquire acquire;
            if (PyErr_CheckSignals() != 0) {
                if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
                    PyErr_Clear();
                    user_interrupt = true;
                } else {
                    py_error.emplace();
                }
                stop = true;
            }
            const auto now = std::chrono::steady_clock::now();
            if (!progress.is_none() && !stop && now - last_call >= std::chrono::milliseconds(500)) {
                double t, lb, ub;
                long long n_alpha, it;
                bool fresh;
                {
                    std::lock_guard<std::mutex> lock(prog.mutex);
                    fresh = prog.fresh;
                    t = prog.time;
                    lb = prog.lb;
                    ub = prog.ub;
                    n_alpha = prog.n_alpha;
                    it = prog.iteration;
                    prog.fresh = false;
                }
                if (fresh) {
                    last_call = now;
                    try {
                        progress(t, lb, ub, n_alpha, it);
                    } catch (py::error_already_set& e) {
                        if (e.matches(PyExc_KeyboardInterrupt)) {
                            user_interrupt = true;
                        } else {
                            py_error.emplace(std::move(e));
                        }
                        stop = true;
                    }
                }
            }
        }
        try {
            fut.get();
        } catch (...) {
            solver_error = std::current_exception();
        }
    }
    if (py_error) throw std::move(*py_error);
    if (solver_error) std::rethrow_exception(solver_error);

    const auto K = static_cast<py::ssize_t>(res.actions.size());
    py::array_t<long long> actions(K);
    for (py::ssize_t k = 0; k < K; ++k) actions.mutable_at(k) = res.actions[k];
    const auto N = static_cast<py::ssize_t>(res.history.size() / 5);
    py::dict out;
    // no copy: the arrays take the result's buffers over (float32 for single-precision vectors)
    if (res.single)
        out["alphas"] = to_array(std::move(res.alphas_single), {K, S});
    else
        out["alphas"] = to_array(std::move(res.alphas), {K, S});
    out["actions"] = actions;
    out["lower_bound"] = res.lower_bound;
    out["upper_bound"] = res.upper_bound;
    out["gap"] = res.gap;
    out["time_s"] = res.time_s;
    out["iterations"] = res.iterations;
    out["n_beliefs"] = res.n_beliefs;
    out["history"] = to_array(res.history, {N, 5});
    out["interrupted"] = user_interrupt || (res.interrupted && !py_error);
    out["memory_mb"] = res.memory_mb;
    return out;
}

// Test hook: one point-based backup at b (both bounds) with the solver's own code.
py::dict hsvi_backup(py::object T, py::object Z, DArray R, double discount, DArray alphas,
                     IArray actions, DArray b) {
    trim::Pomdp model = pomdp_from_py(T, Z, R, discount, b, false, "b");
    const py::ssize_t A = model.n_actions, S = model.n_states;
    require_ndim(alphas, "alphas", "K, n_states", 2);
    const py::ssize_t K = alphas.shape(0);
    require_shape(alphas, "alphas", "K, n_states", {K, S});
    require_shape(actions, "actions", "K", {K});
    std::vector<int> acts(actions.data(), actions.data() + K);
    auto res = trim::HsviSolver::backup_at(model, to_vector<double>(alphas), acts, model.b0);
    py::dict out;
    out["alpha"] = to_array(res.alpha, {S});
    out["action"] = res.action;
    out["q_lower"] = to_array(res.q_lower, {A});
    out["q_upper"] = to_array(res.q_upper, {A});
    out["fib"] = to_array(res.fib, {A, S});
    return out;
}

}  // namespace

void bind_solver(py::module_& m) {
    m.def("solve_pomdp", &solve_pomdp, py::arg("T"), py::arg("Z"), py::arg("R"),
          py::arg("discount"), py::arg("b0"), py::kw_only(), py::arg("time_limit"),
          py::arg("target_gap"), py::arg("max_iterations"), py::arg("max_memory_mb"),
          py::arg("n_threads"), py::arg("progress") = py::none(), py::arg("tol") = 1e-6,
          py::arg("single_alphas") = false,
          "HSVI2/SARSOP-style point-based solve of a discrete POMDP (see trim_pomdp.solver).");
    m.def("_hsvi_backup", &hsvi_backup, py::arg("T"), py::arg("Z"), py::arg("R"),
          py::arg("discount"), py::arg("alphas"), py::arg("actions"), py::arg("b"),
          "Test hook: one backup of both bounds at belief b (the solver's own code).");
}
