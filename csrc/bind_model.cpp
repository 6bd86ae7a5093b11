// Bindings of the model (bind_model): the .pomdp parser/writer and model validation.
#include <optional>
#include <string>
#include <vector>

#include "bind_common.hpp"
#include "pomdp.hpp"
#include "pomdp_parser.hpp"
#include "pomdp_validate.hpp"

namespace {

using trim_bind::DArray;
using Names = std::optional<std::vector<std::string>>;

// The shared shape-checked copy (bind_common.hpp; T and Z dense arrays or compressed-row
// tuples) plus the optional names.
trim::Pomdp pomdp_from_arrays(const py::object& T, const py::object& Z, const DArray& R,
                              double discount, const DArray& b0, const Names& state_names,
                              const Names& action_names, const Names& obs_names) {
    trim::Pomdp m = trim_bind::pomdp_from_py(T, Z, R, discount, b0, false);
    if (state_names) m.state_names = *state_names;
    if (action_names) m.action_names = *action_names;
    if (obs_names) m.obs_names = *obs_names;
    return m;
}

// Hands a vector's buffer to NumPy without copying (the capsule owns the vector): a
// fresh copy of RockSample's 4.7 MB T would cost more page faults than the parse itself.
py::array_t<double> move_to_array(std::vector<double>&& v, std::vector<py::ssize_t> shape) {
    auto* owned = new std::vector<double>(std::move(v));
    py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<double>*>(p); });
    return py::array_t<double>(shape, owned->data(), owner);
}

py::object names_or_none(const std::vector<std::string>& names) {
    if (names.empty()) return py::none();
    return py::cast(names);
}

}  // namespace

void bind_model(py::module_& m) {
    m.def(
        "parse_pomdp",
        [](const std::string& text, const std::string& filename, double tol,
           std::size_t max_entries, bool validate, std::optional<double> max_memory_mb,
           const std::string& storage, double dense_max_mb) {
            trim::ParseOptions opts;
            opts.tol = tol;
            opts.max_entries = max_entries;
            opts.validate = validate;
            if (storage == "auto") {
                opts.storage = trim::ParseOptions::Storage::Auto;
            } else if (storage == "dense") {
                opts.storage = trim::ParseOptions::Storage::Dense;
            } else if (storage == "sparse") {
                opts.storage = trim::ParseOptions::Storage::Sparse;
            } else {
                throw py::value_error("storage must be 'auto', 'dense' or 'sparse'; got '" +
                                      storage + "'");
            }
            if (!(dense_max_mb >= 0.0)) throw py::value_error("dense_max_mb must be >= 0");
            opts.dense_max_mb = dense_max_mb;
            if (max_memory_mb) {
                if (!(*max_memory_mb > 0.0))
                    throw py::value_error("max_memory_mb must be > 0 or None");
                opts.max_memory_mb = *max_memory_mb;
            }
            trim::Pomdp p;
            trim::ParseInfo info;
            {
                py::gil_scoped_release release;
                p = trim::parse_pomdp(text, filename, opts, &info);
            }
            const py::ssize_t A = p.n_actions, S = p.n_states, O = p.n_obs;
            py::dict d;
            if (p.sparse) {
                d["T"] = trim_bind::csr_to_tuple(std::move(p.Ts), S);
                d["Z"] = trim_bind::csr_to_tuple(std::move(p.Zs), O);
            } else {
                d["T"] = move_to_array(std::move(p.T), {A, S, S});
                d["Z"] = move_to_array(std::move(p.Z), {A, S, O});
            }
            d["storage"] = p.sparse ? "sparse" : "dense";
            d["R"] = move_to_array(std::move(p.R), {A, S});
            d["discount"] = p.discount;
            d["b0"] = move_to_array(std::move(p.b0), {S});
            d["state_names"] = names_or_none(p.state_names);
            d["action_names"] = names_or_none(p.action_names);
            d["observation_names"] = names_or_none(p.obs_names);
            // R is always returned as rewards (costs already negated); "values" records what
            // the file declared, for information only.
            d["values"] = info.cost ? "cost" : "reward";
            return d;
        },
        py::arg("text"), py::arg("filename") = "<string>", py::kw_only(), py::arg("tol") = 1e-6,
        py::arg("max_entries") = trim::ParseOptions().max_entries, py::arg("validate") = true,
        py::arg("max_memory_mb") = py::none(), py::arg("storage") = "auto",
        py::arg("dense_max_mb") = trim::ParseOptions().dense_max_mb,
        "Parse Cassandra .pomdp text (str or bytes) into a dict of model arrays.\n\n"
        "Keys: T, Z, R, discount, b0, state_names, action_names, observation_names (None when\n"
        "given as a count), values ('reward' or 'cost' as declared; R is always rewards,\n"
        "costs negated) and storage ('dense': T (A, S, S) and Z (A, S, O) arrays; 'sparse':\n"
        "T and Z as compressed rows (ptr, idx, val, n_cols), row a*S + s).  storage='auto'\n"
        "is dense when the dense arrays take at most dense_max_mb MiB and fit the limits.\n"
        "Raises PomdpFormatError('file:line: ...') on any syntax, reference, count or\n"
        "consistency problem; MemoryLimitError when the header declares a model whose\n"
        "arrays exceed max_memory_mb (MiB; None: no limit), or when memory runs out.");

    m.attr("MAX_VALUE") = trim::kMaxValue;
    m.def(
        "parse_memory_bytes",
        [](double n_states, double n_actions, double n_obs) {
            return trim::parse_memory_bytes(n_states, n_actions, n_obs);
        },
        py::arg("n_states"), py::arg("n_actions"), py::arg("n_observations"),
        "Bytes parse_pomdp allocates for a model of this size (dense T, Z, R, b0 and row "
        "bookkeeping), besides its token list.");

    m.def(
        "parse_sparse_base_bytes",
        [](double n_states, double n_actions, double n_obs) {
            return trim::parse_sparse_base_bytes(n_states, n_actions, n_obs);
        },
        py::arg("n_states"), py::arg("n_actions"), py::arg("n_observations"),
        "Bytes a sparse parse_pomdp allocates from the header alone (R, b0, per-row "
        "bookkeeping); its entries are counted as they are written.");

    m.def(
        "write_pomdp",
        [](const py::object& T, const py::object& Z, const DArray& R, double discount,
           const DArray& b0, const Names& state_names, const Names& action_names,
           const Names& obs_names) {
            trim::Pomdp p = pomdp_from_arrays(T, Z, R, discount, b0, state_names, action_names,
                                              obs_names);
            py::gil_scoped_release release;
            return trim::write_pomdp(p);
        },
        py::arg("T"), py::arg("Z"), py::arg("R"), py::arg("discount"), py::arg("b0"),
        py::arg("state_names") = py::none(), py::arg("action_names") = py::none(),
        py::arg("observation_names") = py::none(),
        "Write model arrays as Cassandra .pomdp text (exact round trip through parse_pomdp).");

    m.def(
        "validate_pomdp",
        [](const py::object& T, const py::object& Z, const DArray& R, double discount,
           const DArray& b0, double tol, const Names& state_names, const Names& action_names,
           const Names& obs_names) {
            trim::Pomdp p = pomdp_from_arrays(T, Z, R, discount, b0, state_names, action_names,
                                              obs_names);
            py::gil_scoped_release release;
            trim::validate_pomdp(p, tol);
        },
        py::arg("T"), py::arg("Z"), py::arg("R"), py::arg("discount"), py::arg("b0"),
        py::arg("tol") = 1e-6, py::arg("state_names") = py::none(),
        py::arg("action_names") = py::none(), py::arg("observation_names") = py::none(),
        "Raise ModelValidationError naming the array, action, state and sum when the model is "
        "inconsistent.");
}
