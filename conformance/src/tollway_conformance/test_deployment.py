"""Check a running deployment from the outside::

    pytest --pyargs tollway_conformance.test_deployment \
        --tollway-url https://gateway.internal --tollway-key lw_vk_live_… --tollway-model gpt-4o
"""

from __future__ import annotations

from tollway_conformance.gateway_suite import GatewaySuite


class TestDeployment(GatewaySuite):
    """The black-box suite against ``--tollway-url`` / ``TOLLWAY_CONFORMANCE_URL``."""
