// Exception types of the core.  Their base classes decide the Python exception they
// become (csrc/bindings.cpp): invalid_argument -> ValueError, runtime_error -> RuntimeError,
// and the subclasses below map onto trim_pomdp.errors.
#pragma once

#include <stdexcept>
#include <string>

namespace trim {

// A .pomdp text could not be parsed; carries the file name and the 1-based line.
struct ParseError : std::invalid_argument {
    std::string file;
    int line;
    ParseError(const std::string& file_, int line_, const std::string& what)
        : std::invalid_argument(file_ + ":" + std::to_string(line_) + ": " + what),
          file(file_), line(line_) {}
};

// Model arrays are inconsistent (shape, non-finite, negative, rows not summing to 1).
struct ModelError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// The solver would exceed its memory limit.
struct MemoryLimitError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace trim
