// Placeholder: replaced by the real bindings of this piece.
#include "bind_common.hpp"

void bind_solver(py::module_& m) { (void)m; }
