"""Build the compiled core ``trim_pomdp._core`` from ``csrc/``.

Metadata and dependencies live in ``pyproject.toml``; this file only describes the
extension.  Native CPU tuning (``-march=native``) is opt-in through the environment
variable ``TRIM_POMDP_NATIVE=1`` so that wheels built here run on other CPUs.
"""

import os
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# Both cores of the build machine compile translation units in parallel.
ParallelCompile("NPY_NUM_BUILD_JOBS", default=2).install()

extra_compile_args = ["-O3"]
if os.environ.get("TRIM_POMDP_NATIVE") == "1":
    extra_compile_args.append("-march=native")

ext_modules = [
    Pybind11Extension(
        "trim_pomdp._core",
        sorted(glob("csrc/*.cpp")),
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=extra_compile_args,
        extra_link_args=["-pthread"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
