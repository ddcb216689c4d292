"""TapDevice's queue count is checked before any device is made (one per data-plane worker)."""

from __future__ import annotations

import pytest

from enclave.dataplane.tap import MAX_QUEUES, TapDevice


@pytest.mark.parametrize("queues", [0, -1, MAX_QUEUES + 1])
def test_queue_count_out_of_range_is_refused(queues: int) -> None:
    with pytest.raises(ValueError, match="queues"):
        TapDevice("enclave-q", queues=queues)
