#include "pomdp_sparse.hpp"

#include <vector>

namespace trim {

Csr dense_to_csr(const double* dense, std::size_t rows, std::size_t cols) {
    Csr out;
    std::size_t nnz = 0;
    for (std::size_t k = 0; k < rows * cols; ++k) nnz += dense[k] != 0.0 ? 1 : 0;
    out.ptr.assign(rows + 1, 0);
    out.idx.reserve(nnz);
    out.val.reserve(nnz);
    for (std::size_t r = 0; r < rows; ++r) {
        const double* row = dense + r * cols;
        for (std::size_t j = 0; j < cols; ++j)
            if (row[j] != 0.0) {  // NaN != 0: kept
                out.idx.push_back(static_cast<int>(j));
                out.val.push_back(row[j]);
            }
        out.ptr[r + 1] = static_cast<std::int64_t>(out.idx.size());
    }
    return out;
}

std::string csr_problem(const Csr& m, std::size_t rows, std::size_t cols, const char* name) {
    const std::string n(name);
    if (m.ptr.size() != rows + 1)
        return n + ": expected " + std::to_string(rows + 1) + " row offsets; got " +
               std::to_string(m.ptr.size());
    if (m.idx.size() != m.val.size())
        return n + ": " + std::to_string(m.idx.size()) + " column indices but " +
               std::to_string(m.val.size()) + " values";
    if (m.ptr[0] != 0 || m.ptr[rows] != static_cast<std::int64_t>(m.idx.size()))
        return n + ": row offsets must run from 0 to the number of entries (" +
               std::to_string(m.idx.size()) + ")";
    for (std::size_t r = 0; r < rows; ++r) {
        if (m.ptr[r + 1] < m.ptr[r])
            return n + ": row offsets decrease at row " + std::to_string(r);
        for (auto k = m.ptr[r]; k < m.ptr[r + 1]; ++k) {
            const int j = m.idx[k];
            if (j < 0 || static_cast<std::size_t>(j) >= cols)
                return n + ": row " + std::to_string(r) + " has column " + std::to_string(j) +
                       " outside [0, " + std::to_string(cols) + ")";
            if (k > m.ptr[r] && m.idx[k - 1] >= j)
                return n + ": row " + std::to_string(r) +
                       " columns are not strictly increasing";
        }
    }
    return "";
}

void to_sparse(Pomdp& m) {
    if (m.sparse) return;
    const std::size_t S = m.n_states, A = m.n_actions, O = m.n_obs;
    m.Ts = dense_to_csr(m.T.data(), A * S, S);
    std::vector<double>().swap(m.T);
    m.Zs = dense_to_csr(m.Z.data(), A * S, O);
    std::vector<double>().swap(m.Z);
    m.sparse = true;
}

double csr_bytes(const Pomdp& m) {
    auto b = [](const Csr& c) {
        return 8.0 * static_cast<double>(c.ptr.size()) + 4.0 * static_cast<double>(c.idx.size()) +
               8.0 * static_cast<double>(c.val.size());
    };
    return b(m.Ts) + b(m.Zs);
}

}  // namespace trim
