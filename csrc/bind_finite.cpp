// Bindings of the finite-horizon MOMDP solver (csrc/fh_*.{hpp,cpp}):
//   _core.solve_finite(model: dict, **config) -> dict
//   _core.solve_finite_many(models: list[dict], **config) -> list[dict]
// A model dict has keys T, Z, R, R_final, x0, b0, discount, horizon (arrays as documented in
// fh_model.hpp; T, Z, R with or without the leading epoch dimension).  Arrays are checked and
// copied with the GIL held; solving runs with the GIL released.
#include <string>
#include <thread>
#include <vector>

#include "bind_common.hpp"
#include "fh_model.hpp"

using trim::fh::FhConfig;
using trim::fh::FhModel;
using trim::fh::FhResult;
using trim_bind::DArray;
using trim_bind::require_shape;
using trim_bind::shape_str;

namespace {

DArray get_array(const py::dict& d, const char* key) {
    if (!d.contains(key)) throw py::value_error(std::string("model dict is missing key '") + key + "'");
    return DArray::ensure(d[key]);
}

std::vector<py::ssize_t> shape_of(const DArray& a) {
    return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

FhModel model_from_dict(const py::dict& d) {
    FhModel m;
    DArray T = get_array(d, "T"), Z = get_array(d, "Z"), R = get_array(d, "R"),
           Rf = get_array(d, "R_final"), x0 = get_array(d, "x0"), b0 = get_array(d, "b0");
    if (!T || !Z || !R || !Rf || !x0 || !b0) throw py::value_error("model arrays must be numeric");
    if (!d.contains("horizon")) throw py::value_error("model dict is missing key 'horizon'");
    m.H = d["horizon"].cast<int>();
    m.discount = d.contains("discount") ? d["discount"].cast<double>() : 1.0;
    if (m.H < 1) throw py::value_error("horizon must be >= 1; got " + std::to_string(m.H));
    if (T.ndim() == 6) {
        m.T_timed = true;
        if (T.shape(0) != m.H)
            throw py::value_error("T has " + std::to_string(T.shape(0)) + " epochs; horizon is " +
                                  std::to_string(m.H));
    } else if (T.ndim() != 5) {
        throw py::value_error("T must have shape (horizon, n_actions, n_observed, n_hidden, n_observed, "
                              "n_hidden) or (n_actions, n_observed, n_hidden, n_observed, n_hidden); got " +
                              shape_str(shape_of(T)));
    }
    const int o = m.T_timed ? 1 : 0;
    m.A = static_cast<int>(T.shape(o));
    m.X = static_cast<int>(T.shape(o + 1));
    m.S = static_cast<int>(T.shape(o + 2));
    if (T.shape(o + 3) != m.X || T.shape(o + 4) != m.S)
        throw py::value_error("T's last two dimensions must be (n_observed, n_hidden) = (" +
                              std::to_string(m.X) + ", " + std::to_string(m.S) + "); got " +
                              shape_str(shape_of(T)));
    if (Z.ndim() == 5) {
        m.Z_timed = true;
        m.O = static_cast<int>(Z.shape(4));
        require_shape(Z, "Z", "horizon, n_actions, n_observed, n_hidden, n_observations",
                      {m.H, m.A, m.X, m.S, m.O});
    } else if (Z.ndim() == 4) {
        m.O = static_cast<int>(Z.shape(3));
        require_shape(Z, "Z", "n_actions, n_observed, n_hidden, n_observations", {m.A, m.X, m.S, m.O});
    } else {
        throw py::value_error("Z must have 4 or 5 dimensions; got " + shape_str(shape_of(Z)));
    }
    if (R.ndim() == 4) {
        m.R_timed = true;
        require_shape(R, "R", "horizon, n_actions, n_observed, n_hidden", {m.H, m.A, m.X, m.S});
    } else {
        require_shape(R, "R", "n_actions, n_observed, n_hidden", {m.A, m.X, m.S});
    }
    require_shape(Rf, "R_final", "n_observed, n_hidden", {m.X, m.S});
    require_shape(x0, "x0", "n_observed", {m.X});
    require_shape(b0, "b0", "n_observed, n_hidden", {m.X, m.S});
    m.T = trim_bind::to_vector<double>(T);
    m.Z = trim_bind::to_vector<double>(Z);
    m.R = trim_bind::to_vector<double>(R);
    m.R_final = trim_bind::to_vector<double>(Rf);
    m.x0 = trim_bind::to_vector<double>(x0);
    m.b0 = trim_bind::to_vector<double>(b0);
    return m;
}

int default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

FhConfig make_config(const py::object& belief_points, int grid_resolution, int n_samples,
                     int n_refine, double target_gap, const py::object& n_threads,
                     unsigned long long seed, bool share_slices, bool sawtooth) {
    FhConfig c;
    if (!belief_points.is_none()) {
        DArray bp = DArray::ensure(belief_points);
        if (!bp || bp.ndim() != 2)
            throw py::value_error("belief_points must be a 2-D array (n_points, n_hidden)");
        c.belief_points = trim_bind::to_vector<double>(bp);
    }
    c.grid_resolution = grid_resolution;
    c.n_samples = n_samples;
    c.n_refine = n_refine;
    c.target_gap = target_gap;
    c.n_threads = n_threads.is_none() ? default_threads() : n_threads.cast<int>();
    c.seed = seed;
    c.share_slices = share_slices;
    c.sawtooth = sawtooth;
    return c;
}

py::dict result_to_dict(const FhResult& r, int S) {
    py::dict d;
    const py::ssize_t K = static_cast<py::ssize_t>(r.actions.size());
    d["alphas"] = trim_bind::to_array(r.alphas, {K, static_cast<py::ssize_t>(S)});
    py::array_t<long long> acts(K);
    for (py::ssize_t k = 0; k < K; ++k) acts.mutable_data()[k] = r.actions[k];
    d["actions"] = acts;
    py::array_t<long long> offs(static_cast<py::ssize_t>(r.offsets.size()));
    std::copy(r.offsets.begin(), r.offsets.end(), offs.mutable_data());
    d["offsets"] = offs;
    d["lower_bound"] = r.lower_bound;
    d["upper_bound"] = r.upper_bound;
    d["gap"] = r.gap;
    d["time_s"] = r.time_s;
    d["n_beliefs"] = r.n_beliefs;
    d["n_passes"] = r.n_passes;
    d["history"] = trim_bind::to_array(r.history, {static_cast<py::ssize_t>(r.history.size() / 3), 3});
    return d;
}

}  // namespace

void bind_finite(py::module_& m) {
    m.def(
        "solve_finite",
        [](const py::dict& model, const py::object& belief_points, int grid_resolution, int n_samples,
           int n_refine, double target_gap, const py::object& n_threads, unsigned long long seed,
           bool share_slices, bool sawtooth) {
            FhModel fm = model_from_dict(model);
            FhConfig c = make_config(belief_points, grid_resolution, n_samples, n_refine, target_gap,
                                     n_threads, seed, share_slices, sawtooth);
            FhResult r;
            {
                py::gil_scoped_release release;
                r = trim::fh::solve_fh(fm, c);
            }
            return result_to_dict(r, fm.S);
        },
        py::arg("model"), py::kw_only(), py::arg("belief_points") = py::none(),
        py::arg("grid_resolution") = 0, py::arg("n_samples") = 32, py::arg("n_refine") = 0,
        py::arg("target_gap") = 0.0, py::arg("n_threads") = py::none(), py::arg("seed") = 0,
        py::arg("share_slices") = true, py::arg("sawtooth") = true,
        "Solve one finite-horizon MOMDP (model dict: T, Z, R, R_final, x0, b0, discount, horizon).");
    m.def(
        "solve_finite_many",
        [](const py::list& models, const py::object& belief_points, int grid_resolution, int n_samples,
           int n_refine, double target_gap, const py::object& n_threads, unsigned long long seed,
           bool share_slices, bool sawtooth) {
            std::vector<FhModel> fms;
            fms.reserve(models.size());
            for (std::size_t i = 0; i < models.size(); ++i) {
                try {
                    fms.push_back(model_from_dict(models[i].cast<py::dict>()));
                } catch (py::value_error& e) {
                    throw py::value_error("models[" + std::to_string(i) + "]: " + e.what());
                }
            }
            FhConfig c = make_config(belief_points, grid_resolution, n_samples, n_refine, target_gap,
                                     n_threads, seed, share_slices, sawtooth);
            std::vector<FhResult> rs;
            {
                py::gil_scoped_release release;
                rs = trim::fh::solve_fh_many(fms, c, c.n_threads);
            }
            py::list out;
            for (std::size_t i = 0; i < rs.size(); ++i) out.append(result_to_dict(rs[i], fms[i].S));
            return out;
        },
        py::arg("models"), py::kw_only(), py::arg("belief_points") = py::none(),
        py::arg("grid_resolution") = 0, py::arg("n_samples") = 32, py::arg("n_refine") = 0,
        py::arg("target_gap") = 0.0, py::arg("n_threads") = py::none(), py::arg("seed") = 0,
        py::arg("share_slices") = true, py::arg("sawtooth") = true,
        "Solve many finite-horizon MOMDPs in parallel on a C++ thread pool (GIL released).");
}
