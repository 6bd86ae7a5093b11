// Reader and writer of A. R. Cassandra's `.pomdp` text format.  Pure C++17.
//
// Supported (the complete format of pomdp-solve / SARSOP):
//   discount: <number>                      values: reward | cost   (also "rewards", "costs")
//   states: <count> | <name> <name> ...     (same for actions: and observations:)
//   start: <probabilities> | <state>        start include: <states>   start exclude: <states>
//   T: a : s : s' <p>    T: a : s <row>|uniform    T: a <matrix>|uniform|identity
//   O: a : s' : o <p>    O: a : s' <row>|uniform   O: a <matrix>|uniform
//   R: a : s : s' : o <v>   R: a : s : s' <row over o>   R: a : s <matrix over (s', o)>
// with `*` wildcards for any action/state/observation, 0-based indices or names, comments
// from `#` to the end of the line, statements spanning lines.  Later entries override
// earlier ones.  R(a, s, s', o) is reduced to the expected immediate reward
//   R(a, s) = sum_{s'} T(s'|s, a) sum_o Z(o|s', a) R(a, s, s', o),
// exactly R(a, s) = r when R(a, s, ., .) = r for every (s', o).  `values: cost` negates rewards.
// A missing `start:` means the uniform initial belief.
#pragma once

#include <cstddef>
#include <limits>
#include <string>

#include "pomdp.hpp"

namespace trim {

struct ParseOptions {
    // Rows of T and O and the start belief must sum to 1 within this absolute tolerance;
    // the parser reports a violation as a ParseError at the line that last set the row.
    double tol = 1e-6;
    // Upper bound on the dense entries A*S*S + A*S*O (a guard against a mistyped count such
    // as "states: 1000000" allocating terabytes).  2^28 entries = 2 GiB of doubles.
    std::size_t max_entries = std::size_t(1) << 28;
    // Upper bound, in MiB, on what the parse allocates: the dense arrays T, Z, R, b0 and the
    // per-row bookkeeping, estimated from the header (parse_memory_bytes) before any of it
    // is allocated, plus the token list already built.  Over it the parse throws
    // MemoryLimitError ("file:line: model too large for max_memory_mb=..."); infinity: no
    // limit beyond max_entries.
    double max_memory_mb = std::numeric_limits<double>::infinity();
    // When false, the stochasticity checks are skipped (syntax is still checked).
    bool validate = true;
    // How T and Z are held (Pomdp::sparse).  Auto: dense when the dense arrays
    // (parse_memory_bytes) take at most dense_max_mb MiB and fit max_entries and
    // max_memory_mb, else sparse rows.  Dense: always (max_entries and the memory estimate
    // refuse large models from the header, as before sparse storage existed).  Sparse:
    // always.  Both give the same values; sparse drops the entries equal to +-0.
    enum class Storage { Auto, Dense, Sparse };
    Storage storage = Storage::Auto;
    double dense_max_mb = 256.0;
};

// What the file declared beyond the model itself.
struct ParseInfo {
    bool cost = false;  // "values: cost" (R has been negated into rewards)
};

// Bytes the parser allocates for a model of this size besides its token list: the dense
// T (A*S*S), Z (A*S*O), R (A*S) and b0 (S) doubles, the per-row line numbers and R lists
// (A*S each) and one S x O reward grid.  Computed in doubles, so it cannot overflow.
double parse_memory_bytes(double n_states, double n_actions, double n_obs);

// The part of a sparse parse fixed by the header: R, b0, one S x O reward grid and the
// per-row bookkeeping (line numbers, R lists, the row lists of T and Z, row offsets).  The
// entries themselves are counted as they are written, and a statement that would take them
// over max_memory_mb is refused (MemoryLimitError at its line) before it writes.
double parse_sparse_base_bytes(double n_states, double n_actions, double n_obs);

// Parses `text`; `filename` only labels error messages.  Throws ParseError
// ("file:line: what was expected; what was found") for any syntax, reference, count or
// consistency problem, MemoryLimitError ("file:line: model too large for
// max_memory_mb=...") when the header declares a model over opts.max_memory_mb, and
// MemoryLimitError ("file: out of memory while parsing ...") instead of std::bad_alloc.
// Never returns an inconsistent model when opts.validate is true.
Pomdp parse_pomdp(const std::string& text, const std::string& filename,
                  const ParseOptions& opts = ParseOptions(), ParseInfo* info = nullptr);

// Writes `m` (dense or sparse) in the `.pomdp` format with shortest round-trip number formatting, so that
// parse_pomdp(write_pomdp(m)) reproduces T, Z, R, discount, b0 and the names bit for bit.
// Throws std::invalid_argument when a name cannot be written (not an identifier
// [A-Za-z][A-Za-z0-9_-]*, a keyword of the format, or a duplicate) or a number is not finite.
std::string write_pomdp(const Pomdp& m);

}  // namespace trim
