"""Running the agent and the platform as systemd services (`enclave service ...`)."""
