#include "pomdp_validate.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "pomdp_sparse.hpp"

namespace trim {
namespace {

std::string fmt_num(double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.10g", x);
    return buf;
}

std::string fmt_tol(double tol) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", tol);
    return buf;
}

// " (a=listen, s=tiger-left)" when the model carries names, "" otherwise.
std::string name_suffix(const Pomdp& m, int a, const char* s_label, int s) {
    std::string out;
    if (a >= 0 && static_cast<std::size_t>(a) < m.action_names.size())
        out += "a=" + m.action_names[a];
    if (s >= 0 && static_cast<std::size_t>(s) < m.state_names.size()) {
        if (!out.empty()) out += ", ";
        out += std::string(s_label) + "=" + m.state_names[s];
    }
    return out.empty() ? out : " (" + out + ")";
}

// Checks one probability row given as its entries in column order: finite, non-negative,
// sums to 1 within tol.  `for_each(f)` calls f(column, value) for each stored entry and stops
// when f returns false; absent entries of compressed rows are zeros, which pass and add nothing
// to the sum, so the first bad entry and the sum are those of the dense row.  `label()` returns
// the row label without the trailing "]" ("T[a=1, s=3") and the name suffix; it is called only
// when there is a problem (the scan itself allocates nothing).
template <typename ForEach, typename Label>
std::optional<ModelIssue> check_entries(ForEach for_each, double tol, const char* col,
                                        Label label, char array, int a, int s) {
    double sum = 0.0;
    std::optional<ModelIssue> issue;
    for_each([&](long long j, double v) {
        if (!std::isfinite(v) || v < 0.0) {
            auto [head, names] = label();
            const std::string where = head + ", " + col + "=" + std::to_string(j) + "]";
            issue = !std::isfinite(v)
                        ? ModelIssue{where + " is " + fmt_num(v) +
                                         "; expected a finite probability" + names,
                                     array, a, s}
                        : ModelIssue{where + " = " + fmt_num(v) + " is negative" + names, array,
                                     a, s};
            return false;
        }
        sum += v;
        return true;
    });
    if (issue) return issue;
    if (!(std::fabs(sum - 1.0) <= tol)) {
        auto [head, names] = label();
        return ModelIssue{head + ", :] sums to " + fmt_num(sum) + "; expected 1 (tol " +
                              fmt_tol(tol) + ")" + names,
                          array, a, s};
    }
    return std::nullopt;
}

// Dense row p[0..n).
template <typename Label>
std::optional<ModelIssue> check_row(const double* p, int n, double tol, const char* col,
                                    Label label, char array, int a, int s) {
    return check_entries(
        [&](auto f) {
            for (int j = 0; j < n; ++j)
                if (!f(j, p[j])) return;
        },
        tol, col, label, array, a, s);
}

// Row r of compressed rows.
template <typename Label>
std::optional<ModelIssue> check_row(const Csr& m, std::size_t r, double tol, const char* col,
                                    Label label, char array, int a, int s) {
    return check_entries(
        [&](auto f) {
            for (auto k = m.ptr[r]; k < m.ptr[r + 1]; ++k)
                if (!f(static_cast<long long>(m.idx[k]), m.val[k])) return;
        },
        tol, col, label, array, a, s);
}

}  // namespace

std::optional<ModelIssue> check_pomdp(const Pomdp& m, double tol) {
    if (!(m.discount > 0.0 && m.discount <= 1.0)) {
        return ModelIssue{"discount must be in (0, 1]; got " + fmt_num(m.discount), 'd'};
    }
    if (m.n_states <= 0 || m.n_actions <= 0 || m.n_obs <= 0) {
        return ModelIssue{"a model needs at least one state, action and observation; got " +
                              std::to_string(m.n_states) + " states, " +
                              std::to_string(m.n_actions) + " actions, " +
                              std::to_string(m.n_obs) + " observations",
                          'n'};
    }
    const std::size_t S = m.n_states, A = m.n_actions, O = m.n_obs;
    auto size_issue = [](const char* name, std::size_t want, std::size_t got) {
        return ModelIssue{std::string(name) + " has " + std::to_string(got) +
                              " entries; expected " + std::to_string(want),
                          'n'};
    };
    if (m.sparse) {
        for (auto [c, cols, name] : {std::make_tuple(&m.Ts, S, "T"), std::make_tuple(&m.Zs, O, "Z")}) {
            const std::string why = csr_problem(*c, A * S, cols, name);
            if (!why.empty()) return ModelIssue{"sparse " + why, 'n'};
        }
    } else {
        if (m.T.size() != A * S * S) return size_issue("T", A * S * S, m.T.size());
        if (m.Z.size() != A * S * O) return size_issue("Z", A * S * O, m.Z.size());
    }
    if (m.R.size() != A * S) return size_issue("R", A * S, m.R.size());
    if (m.b0.size() != S) return size_issue("b0", S, m.b0.size());
    if (!m.state_names.empty() && m.state_names.size() != S)
        return size_issue("state_names", S, m.state_names.size());
    if (!m.action_names.empty() && m.action_names.size() != A)
        return size_issue("action_names", A, m.action_names.size());
    if (!m.obs_names.empty() && m.obs_names.size() != O)
        return size_issue("observation_names", O, m.obs_names.size());

    for (int a = 0; a < m.n_actions; ++a) {
        for (int s = 0; s < m.n_states; ++s) {
            const std::size_t r = static_cast<std::size_t>(a) * S + s;
            auto label = [&] {
                return std::make_pair("T[a=" + std::to_string(a) + ", s=" + std::to_string(s),
                                      name_suffix(m, a, "s", s));
            };
            auto issue = m.sparse ? check_row(m.Ts, r, tol, "s'", label, 'T', a, s)
                                  : check_row(&m.T[r * S], m.n_states, tol, "s'", label, 'T', a, s);
            if (issue) return issue;
        }
    }
    for (int a = 0; a < m.n_actions; ++a) {
        for (int s = 0; s < m.n_states; ++s) {
            const std::size_t r = static_cast<std::size_t>(a) * S + s;
            auto label = [&] {
                return std::make_pair("Z[a=" + std::to_string(a) + ", s'=" + std::to_string(s),
                                      name_suffix(m, a, "s'", s));
            };
            auto issue = m.sparse ? check_row(m.Zs, r, tol, "o", label, 'Z', a, s)
                                  : check_row(&m.Z[r * O], m.n_obs, tol, "o", label, 'Z', a, s);
            if (issue) return issue;
        }
    }
    // H * max|R| bounds every value the solvers compute (see kMaxValue).
    const double horizon = m.discount < 1.0 ? 1.0 / (1.0 - m.discount) : 1.0;
    for (int a = 0; a < m.n_actions; ++a) {
        for (int s = 0; s < m.n_states; ++s) {
            const double v = m.R[static_cast<std::size_t>(a) * S + s];
            if (!std::isfinite(v)) {
                return ModelIssue{"R[a=" + std::to_string(a) + ", s=" + std::to_string(s) +
                                      "] is " + fmt_num(v) + "; expected a finite number" +
                                      name_suffix(m, a, "s", s),
                                  'R', a, s};
            }
            if (!(std::fabs(v) * horizon <= kMaxValue)) {
                std::string bound = "|R| must be at most " + fmt_num(kMaxValue);
                if (m.discount < 1.0)
                    bound = "|R| / (1 - discount) = " + fmt_num(std::fabs(v) * horizon) +
                            " must be at most " + fmt_num(kMaxValue);
                return ModelIssue{"R[a=" + std::to_string(a) + ", s=" + std::to_string(s) +
                                      "] = " + fmt_num(v) + " is too large: " + bound +
                                      " so that the solver's values stay finite; rescale the "
                                      "rewards" + name_suffix(m, a, "s", s),
                                  'R', a, s};
            }
        }
    }
    double sum = 0.0;
    for (int s = 0; s < m.n_states; ++s) {
        const double v = m.b0[s];
        if (!std::isfinite(v))
            return ModelIssue{"b0[" + std::to_string(s) + "] is " + fmt_num(v) +
                                  "; expected a finite probability",
                              'b', -1, s};
        if (v < 0.0)
            return ModelIssue{"b0[" + std::to_string(s) + "] = " + fmt_num(v) + " is negative",
                              'b', -1, s};
        sum += v;
    }
    if (!(std::fabs(sum - 1.0) <= tol)) {
        return ModelIssue{"b0 sums to " + fmt_num(sum) + "; expected 1 (tol " + fmt_tol(tol) + ")",
                          'b'};
    }
    return std::nullopt;
}

void validate_pomdp(const Pomdp& m, double tol) {
    if (!(tol >= 0.0) || !std::isfinite(tol)) {
        throw std::invalid_argument("tol must be a finite number >= 0; got " + fmt_num(tol));
    }
    if (auto issue = check_pomdp(m, tol)) throw ModelError(issue->message);
}

}  // namespace trim
