"""The agent: state directory, key store, enrolment and renewal (later: the daemon).

Never imports enclave.platform; shares enclave.cert with it.
"""
