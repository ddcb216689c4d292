"""Build the compiled fast path only; all metadata lives in pyproject.toml.

ENCLAVE_ANNOTATE=1  writes Cython's HTML annotation next to the .pyx (Python interaction per line)
ENCLAVE_DEBUG=1     builds with -O0 -g and Cython bounds checks on, for gdb/valgrind
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("ENCLAVE_DEBUG") == "1"
annotate = os.environ.get("ENCLAVE_ANNOTATE") == "1"

cflags = ["-O0", "-g"] if debug else ["-O3", "-fno-strict-aliasing"]
directives = {
    "language_level": "3",
    "boundscheck": debug,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": debug,
    "embedsignature": True,
}

ext = Extension(
    "enclave._fastpath",
    ["enclave/_fastpath.pyx"],
    extra_compile_args=cflags,
    libraries=["dl"],
)

setup(ext_modules=cythonize([ext], compiler_directives=directives, annotate=annotate))
