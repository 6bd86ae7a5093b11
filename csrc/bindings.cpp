// The module trim_pomdp._core: exception translation and the list of bound modules.
// Conversions live in bind_*.cpp, one file per part of the core (model/parser, solver,
// finite-horizon solver); the core itself never sees a Python object.
#include "bind_common.hpp"
#include "errors.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "Compiled core of trim_pomdp (private: use the trim_pomdp package).";

    // Map the core's exception types onto trim_pomdp.errors (imported lazily so that a
    // broken Python side cannot stop the module from loading).
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const trim::ParseError& e) {
            py::object cls = py::module_::import("trim_pomdp.errors").attr("PomdpFormatError");
            py::object err = cls(e.what(), e.file, e.line);
            PyErr_SetObject(cls.ptr(), err.ptr());
        } catch (const trim::ModelError& e) {
            py::object cls = py::module_::import("trim_pomdp.errors").attr("ModelValidationError");
            PyErr_SetString(cls.ptr(), e.what());
        } catch (const trim::MemoryLimitError& e) {
            py::object cls = py::module_::import("trim_pomdp.errors").attr("MemoryLimitError");
            PyErr_SetString(cls.ptr(), e.what());
        }
    });

    bind_model(m);
    bind_solver(m);
    bind_finite(m);
}
