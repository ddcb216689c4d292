"""The agent: state directory, key store, enrolment and renewal, and the daemon (`enclave up`:
control channel, discovery, connection manager, TAP + compiled data plane, gateway, DNS).

Never imports enclave.platform; shares enclave.cert with it.
"""
