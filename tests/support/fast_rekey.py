"""`python -m tests.support.fast_rekey SECONDS ARGS...`: the real `enclave` command (ARGS as for
`python -m enclave`) with the session rekey interval, enclave.proto.timing.REKEY_AFTER_TIME,
set to SECONDS, so a netlab test sees rekeys within seconds. Nothing else is changed.
"""

from __future__ import annotations

import sys

from enclave.cli import main as enclave_main
from enclave.proto import timing


def main(argv: list[str]) -> int:
    timing.REKEY_AFTER_TIME = float(argv[0])  # read at run time by enclave.proto.node
    return int(enclave_main(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
