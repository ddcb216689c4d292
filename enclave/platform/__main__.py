"""`python -m enclave.platform ARGS` == `enclave platform ARGS` (without other command groups)."""

import sys

from enclave.platform.cli import main

raise SystemExit(main(["platform", *sys.argv[1:]]))
