// Helpers shared by the binding files (bindings.cpp and bind_*.cpp).  Only binding files
// include pybind11; the core (everything else in csrc/) never does.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <initializer_list>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "pomdp.hpp"
#include "pomdp_sparse.hpp"

namespace py = pybind11;

namespace trim_bind {

using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using IArray = py::array_t<long long, py::array::c_style | py::array::forcecast>;

inline std::string shape_str(const std::vector<py::ssize_t>& shape) {
    std::ostringstream os;
    os << "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) os << ", ";
        os << shape[i];
    }
    if (shape.size() == 1) os << ",";
    os << ")";
    return os.str();
}

// Throws ValueError "NAME must have shape (d0, d1) = (3, 2); got (3,)" unless arr has the
// expected shape.  `dims` names the dimensions, e.g. "n_actions, n_states, n_states".
template <typename Arr>
void require_shape(const Arr& arr, const char* name, const char* dims,
                   std::initializer_list<py::ssize_t> expected) {
    std::vector<py::ssize_t> got(arr.shape(), arr.shape() + arr.ndim());
    std::vector<py::ssize_t> want(expected);
    if (got != want) {
        throw py::value_error(std::string(name) + " must have shape (" + dims + ") = " +
                              shape_str(want) + "; got " + shape_str(got));
    }
}

template <typename T, typename Arr>
std::vector<T> to_vector(const Arr& arr) {
    return std::vector<T>(arr.data(), arr.data() + arr.size());
}

// Throws ValueError "NAME must have shape (d0, d1); got (3,)" unless arr has `ndim` axes
// (checked before the axes are read to build the full expected shape).
template <typename Arr>
void require_ndim(const Arr& arr, const char* name, const char* dims, py::ssize_t ndim) {
    if (arr.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must have shape (" + dims + "); got " +
                              shape_str({arr.shape(), arr.shape() + arr.ndim()}));
    }
}

// Checks the shapes of the model arrays T (A, S, S), Z (A, S, O), R (A, S) and the belief
// (S,) (messages give expected and received shapes) and copies them into a trim::Pomdp.
// `belief_name` names the belief argument in messages ("b0", or "b" for a query point).
inline trim::Pomdp pomdp_from_arrays(const DArray& T, const DArray& Z, const DArray& R,
                                     double discount, const DArray& b0,
                                     const char* belief_name = "b0") {
    require_ndim(T, "T", "n_actions, n_states, n_states", 3);
    require_ndim(Z, "Z", "n_actions, n_states, n_observations", 3);
    const py::ssize_t A = T.shape(0), S = T.shape(1), O = Z.shape(2);
    require_shape(T, "T", "n_actions, n_states, n_states", {A, S, S});
    require_shape(Z, "Z", "n_actions, n_states, n_observations", {A, S, O});
    require_shape(R, "R", "n_actions, n_states", {A, S});
    require_shape(b0, belief_name, "n_states", {S});
    trim::Pomdp m;
    m.n_states = static_cast<int>(S);
    m.n_actions = static_cast<int>(A);
    m.n_obs = static_cast<int>(O);
    m.discount = discount;
    m.T = to_vector<double>(T);
    m.Z = to_vector<double>(Z);
    m.R = to_vector<double>(R);
    m.b0 = to_vector<double>(b0);
    return m;
}

// A compressed-row matrix from Python: the tuple (ptr, idx, val, n_cols) of
// POMDP.T_csr / Z_csr (ptr int64 of rows + 1 offsets, idx column indices, val float64).
// The structure is checked by the core (csr_problem) with the matrix's name in messages.
inline trim::Csr csr_from_tuple(const py::handle& obj, const char* name, py::ssize_t rows,
                                py::ssize_t* n_cols) {
    auto t = py::reinterpret_borrow<py::tuple>(obj);
    if (t.size() != 4)
        throw py::value_error(std::string(name) +
                              " as compressed rows must be (ptr, idx, val, n_cols)");
    auto ptr = t[0].cast<IArray>();
    auto idx = t[1].cast<IArray>();
    auto val = t[2].cast<DArray>();
    *n_cols = t[3].cast<py::ssize_t>();
    require_shape(ptr, (std::string(name) + " ptr").c_str(), "rows + 1", {rows + 1});
    if (idx.ndim() != 1 || val.ndim() != 1 || idx.shape(0) != val.shape(0))
        throw py::value_error(std::string(name) + " idx and val must be 1-d of equal length");
    trim::Csr c;
    c.ptr.assign(ptr.data(), ptr.data() + ptr.size());
    c.idx.resize(idx.size());
    for (py::ssize_t k = 0; k < idx.size(); ++k) {
        const long long j = idx.data()[k];
        if (j < 0 || j >= *n_cols)
            throw py::value_error(std::string(name) + " column index " + std::to_string(j) +
                                  " outside [0, " + std::to_string(*n_cols) + ")");
        c.idx[k] = static_cast<int>(j);
    }
    c.val.assign(val.data(), val.data() + val.size());
    return c;
}

// The model from Python: T and Z each a dense array or a compressed-row tuple (both or
// neither).  Dense arrays become compressed rows too when `as_sparse` (the solver's
// storage, built straight from the NumPy buffers: no dense copy is made).
inline trim::Pomdp pomdp_from_py(const py::object& T, const py::object& Z, const DArray& R,
                                 double discount, const DArray& b0, bool as_sparse,
                                 const char* belief_name = "b0") {
    const bool t_csr = py::isinstance<py::tuple>(T), z_csr = py::isinstance<py::tuple>(Z);
    if (t_csr != z_csr)
        throw py::value_error("T and Z must both be dense arrays or both compressed rows");
    if (!t_csr) {
        auto Td = T.cast<DArray>();
        auto Zd = Z.cast<DArray>();
        if (!as_sparse) return pomdp_from_arrays(Td, Zd, R, discount, b0, belief_name);
        require_ndim(Td, "T", "n_actions, n_states, n_states", 3);
        require_ndim(Zd, "Z", "n_actions, n_states, n_observations", 3);
        const py::ssize_t A = Td.shape(0), S = Td.shape(1), O = Zd.shape(2);
        require_shape(Td, "T", "n_actions, n_states, n_states", {A, S, S});
        require_shape(Zd, "Z", "n_actions, n_states, n_observations", {A, S, O});
        require_shape(R, "R", "n_actions, n_states", {A, S});
        require_shape(b0, belief_name, "n_states", {S});
        trim::Pomdp m;
        m.n_states = static_cast<int>(S);
        m.n_actions = static_cast<int>(A);
        m.n_obs = static_cast<int>(O);
        m.discount = discount;
        m.sparse = true;
        m.Ts = trim::dense_to_csr(Td.data(), static_cast<std::size_t>(A * S), S);
        m.Zs = trim::dense_to_csr(Zd.data(), static_cast<std::size_t>(A * S), O);
        m.R = to_vector<double>(R);
        m.b0 = to_vector<double>(b0);
        return m;
    }
    require_ndim(R, "R", "n_actions, n_states", 2);
    const py::ssize_t A = R.shape(0), S = R.shape(1);
    require_shape(b0, belief_name, "n_states", {S});
    trim::Pomdp m;
    py::ssize_t t_cols = 0, z_cols = 0;
    m.Ts = csr_from_tuple(T, "T", A * S, &t_cols);
    m.Zs = csr_from_tuple(Z, "Z", A * S, &z_cols);
    if (t_cols != S)
        throw py::value_error("T as compressed rows must have n_states = " + std::to_string(S) +
                              " columns; got " + std::to_string(t_cols));
    m.n_states = static_cast<int>(S);
    m.n_actions = static_cast<int>(A);
    m.n_obs = static_cast<int>(z_cols);
    m.discount = discount;
    m.sparse = true;
    m.R = to_vector<double>(R);
    m.b0 = to_vector<double>(b0);
    for (auto [c, cols, name] : {std::make_tuple(&m.Ts, static_cast<std::size_t>(S), "T"),
                                 std::make_tuple(&m.Zs, static_cast<std::size_t>(z_cols), "Z")}) {
        const std::string why = trim::csr_problem(*c, static_cast<std::size_t>(A * S), cols, name);
        if (!why.empty()) throw py::value_error(why);
    }
    return m;
}

// NumPy views of compressed rows: (ptr int64, idx int32, val float64), moved, not copied.
template <typename V>
py::array move_vector(V&& v) {
    using T = typename std::decay_t<V>::value_type;
    auto* owned = new std::decay_t<V>(std::move(v));
    py::capsule owner(owned, [](void* p) { delete static_cast<std::decay_t<V>*>(p); });
    return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, owned->data(), owner);
}

inline py::tuple csr_to_tuple(trim::Csr&& c, py::ssize_t n_cols) {
    return py::make_tuple(move_vector(std::move(c.ptr)), move_vector(std::move(c.idx)),
                          move_vector(std::move(c.val)), n_cols);
}

// Copy a flat vector into a new NumPy array of the given shape.
inline py::array_t<double> to_array(const std::vector<double>& v, std::vector<py::ssize_t> shape) {
    py::array_t<double> out(shape);
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

// The same without the copy: the array takes the vector over (for results too large to hold
// twice, such as the solver's alpha vectors).
template <class E, class Alloc>
py::array_t<E> to_array(std::vector<E, Alloc>&& v, std::vector<py::ssize_t> shape) {
    using Vec = std::vector<E, Alloc>;
    auto* owned = new Vec(std::move(v));
    py::capsule free_it(owned, [](void* p) { delete static_cast<Vec*>(p); });
    return py::array_t<E>(shape, owned->data(), free_it);
}

}  // namespace trim_bind

// Each bind_*.cpp defines one of these; bindings.cpp calls them all.
void bind_model(py::module_& m);
void bind_solver(py::module_& m);
void bind_finite(py::module_& m);
