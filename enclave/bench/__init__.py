"""`enclave bench`: throughput, packet rate, latency and crypto figures, overlay vs raw.

    runner.py   the netlab run as stages (lab -> platform -> enrol -> intent -> up -> connected ->
                flows overlay -> flows raw -> relay reference -> crypto); a stage that cannot
                run says so
    relayref.py the TAP relay reference: the overlay's per-byte work without the UDP leg
    flows.py    one flow = one measurement: iperf3 TCP (JSON), UDP packet rate, UDP ping-pong
    udpgen.py   the bench's own UDP tools (send / recv / echo / ping), `python -m` runnable
    crypto.py   in-process AEAD throughput: compiled batch path vs PyNaCl per frame
    peer.py     `enclave bench peer NAME` against a live agent
    gateway.py  `enclave bench gateway`: client -> gateway -> plain LAN host
    repeat.py   --repeat N: N runs folded into one report, every figure as median and spread
    command.py  what the commands share: --cipher LIST, console, outputs, exit status
    report.py   Figure/Report, rich table, JSON, self-contained HTML with an inline SVG chart
"""
