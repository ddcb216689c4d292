"""The control plane: CA and enrolment, store, HTTPS API (later also discovery and relay).

Never imports enclave.agent; shares enclave.cert with it.
"""
