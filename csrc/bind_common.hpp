// Helpers shared by the binding files (bindings.cpp and bind_*.cpp).  Only binding files
// include pybind11; the core (everything else in csrc/) never does.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "pomdp.hpp"

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

// Copy a flat vector into a new NumPy array of the given shape.
inline py::array_t<double> to_array(const std::vector<double>& v, std::vector<py::ssize_t> shape) {
    py::array_t<double> out(shape);
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

}  // namespace trim_bind

// Each bind_*.cpp defines one of these; bindings.cpp calls them all.
void bind_model(py::module_& m);
void bind_solver(py::module_& m);
void bind_finite(py::module_& m);
