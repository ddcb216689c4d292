"""Success rate of birthday probing (symmetric NAT <-> port-restricted NAT) in a netlab.

    sudo python3 bench/birthday_rate.py                 # 50 attempts, 5 pairs at a time
    sudo python3 bench/birthday_rate.py --attempts 20 --pairs 2 --json /tmp/birthday.json

Each attempt is a fresh pair of real ConnectionManagers (tests.support.birthday.attempt): one
behind a port-restricted NAT, one behind a symmetric NAT (nftables masquerade fully-random), no
relay offered (--relay: a UDP relay is, and the session starts on it); the ordinary punch
fails, the birthday run (256 sockets, <= 2048 probes at
1000/s, <= 3 s) must bring the session up on direct-udp both ways and carry test frames.
Prints the rate, the theoretical probability for the same limits, and per-attempt figures
(probes sent, sockets opened, seconds from the punch time to direct); --json keeps them raw.
Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.discovery.birthday import BirthdayLimits, success_probability
from enclave.netlab import Lab
from tests.support.birthday import attempts, topology


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=5, help="attempts run at once (host pairs)")
    ap.add_argument("--json", type=Path, help="write every attempt's figures here")
    ap.add_argument("--relay", action="store_true",
                    help="offer a UDP relay: the session starts relayed and must move to direct")
    args = ap.parse_args(argv)
    with Lab(topology(args.pairs)) as lab:
        results = asyncio.run(attempts(lab, args.attempts, args.pairs, relay=args.relay))
    ok = [r for r in results if r.direct]
    lim = BirthdayLimits()
    rate = len(ok) / len(results) if results else 0.0
    probes = [r.runs[0]["probes"] for r in ok if r.runs[0] is not None]
    seconds = [r.seconds for r in ok if r.seconds is not None]
    how = "relay offered" if args.relay else "no relay"
    print(f"birthday probing, port-restricted <-> symmetric ({how}): "
          f"{len(ok)}/{len(results)} direct "
          f"({rate:.0%}); theory {success_probability(lim.sockets, lim.probes):.4%} "
          f"for {lim.sockets} sockets, {lim.probes} probes")
    if probes:
        print(f"  probes sent by the easy side until direct: median {statistics.median(probes)}"
              f", max {max(probes)} (sent in batches of up to {lim.max_batch})")
    if seconds:
        print(f"  punch time -> direct both ways: median {statistics.median(seconds):.2f} s, "
              f"max {max(seconds):.2f} s (the ordinary punch gives up after 5 s)")
    for r in results:
        if not r.direct:
            print(f"  attempt {r.index} failed: paths {r.paths}, runs {r.runs}")
    if args.json is not None:
        args.json.write_text(json.dumps([vars(r) for r in results], indent=1, default=str))
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
