"""`enclave bench`: throughput, packet rate, latency and crypto figures, overlay vs raw.

    runner.py   the netlab run as stages (lab -> platform -> enrol -> intent -> up -> connected ->
                flows overlay -> flows raw -> report); a stage that cannot run says so
    flows.py    one flow = one measurement: iperf3 TCP (JSON), UDP packet rate, UDP ping-pong
    udpgen.py   the bench's own UDP tools (send / recv / echo / ping), `python -m` runnable
    crypto.py   in-process AEAD throughput: compiled batch path vs PyNaCl per frame
    peer.py     `enclave bench peer NAME` against a live agent
    report.py   Figure/Report, rich table, JSON, self-contained HTML with an inline SVG chart
"""
