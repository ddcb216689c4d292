"""The netlab tier's fixtures (lab_factory, netlab_required) for the gateway tests."""

from tests.netlab.conftest import lab_factory, netlab_required

__all__ = ["lab_factory", "netlab_required"]
