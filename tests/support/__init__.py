"""Shared test helpers (no tests here), below every tier that uses them.

    wait       wait_for / wait_for_async: poll until truthy, else AssertionError naming `what`
    proc       running `enclave` (REPO, ENV, local_run/popen, run_cli, free_port, stop)
    platform   Platform: the one platform harness (loopback or on a lab host)
    agent      AgentProc: an `enclave up --no-tap` agent on this host, driven by its CLI
    admin_api  the admin HTTP API client and the policies-table reader
    pki        Pki: a real CA (wall clock or simulated)
    router     the in-memory router and hosts for sans-I/O Node tests
    peers      two hosts on the router set up as the peer tests need them
    relay      the relay core and two clients wired together in memory
    cm_agent   in-process agents around real ConnectionManagers; cm_lab: the same in a netlab
    overlay    static-key compiled data planes on lab hosts (TAP + UDP)
    lab        netlab availability, `enclave up` agents in lab hosts, platform_lab
    traffic    ping / UDP echo / TCP digest between lab hosts
    gateway_lab, offload_frames, offload_cases   gateway topology; the TSO/GRO reference model
"""
