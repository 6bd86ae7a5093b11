// Placeholder: replaced by the real bindings of this piece.
#include "bind_common.hpp"

void bind_model(py::module_& m) { (void)m; }
