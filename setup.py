"""Builds the C++ scorer extension `paced_kernels._scorer` (pybind11, no torch at build time).

The extension is pure C++17 + std::thread, so building it never needs torch (and never pulls a
CUDA wheel into pip's isolated build environment).
"""
import glob
import os

from setuptools import setup

try:
    from pybind11.setup_helpers import Pybind11Extension, ParallelCompile, build_ext
except ImportError:  # pragma: no cover - pyproject's build-system always provides pybind11
    raise SystemExit("building Paced needs pybind11 (pip install pybind11)")

ParallelCompile("PACED_BUILD_JOBS", default=0).install()

sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
extra_compile_args = ["-O3"]
extra_link_args = []
if os.environ.get("PACED_ASAN") == "1":  # local fuzzing build, see README
    extra_compile_args = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_link_args = ["-fsanitize=address,undefined"]

ext_modules = []
if sources:
    ext_modules.append(
        Pybind11Extension(
            "paced_kernels._scorer",
            sources,
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args + ["-pthread"],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
