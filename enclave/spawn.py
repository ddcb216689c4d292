"""The one way the project starts its own code in a child process.

Every child runs the *installed* package with this interpreter (``sys.executable``, e.g. the
venv's python behind /usr/local/bin/enclave), started with ``-P`` (Python 3.11+): the current
directory and the script's directory are not put on ``sys.path``. Without it, a child started
from the root of a checkout (`ip netns exec` keeps the working directory) imports the
checkout's uncompiled ``enclave/`` instead of the installed one, and fails without
``enclave._fastpath``.
"""

from __future__ import annotations

import sys


def module_argv(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m MODULE ARGS`` from the installed package (never the cwd)."""
    return [sys.executable, "-P", "-m", module, *args]


def enclave_argv(*args: str) -> list[str]:
    """argv that runs ``enclave ARGS`` (the installed command) in a child process."""
    return module_argv("enclave", *args)
