"""CMIC and NMIC: claimed only when ``ControllerConfig.multi_controller`` is set.

Linux stacks a multipath block device on any controller that claims a
shared namespace, so a single emulated controller must not claim one by
default.
"""

from __future__ import annotations

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.errors import ConfigError
from nvmefast.iocs import build_identify_ns_independent
from nvmefast.testing import Host


@pytest.mark.parametrize("multi", [False, True])
def test_cmic_and_nmic_follow_the_config(multi: bool) -> None:
    cfg = ControllerConfig(namespaces=(NamespaceConfig(size_bytes=1 << 20), NamespaceConfig(size_bytes=1 << 20)), multi_controller=multi)
    with Controller(cfg) as controller, Host(controller) as host:
        host.enable()
        ctrl = host.identify_controller()
        assert ctrl.cmic == (0b10 if multi else 0)
        for nsid in (1, 2):
            ns = host.identify_namespace(nsid)
            assert ns.nmic == (1 if multi else 0)


def test_independent_identify_namespace_nmic() -> None:
    assert build_identify_ns_independent(shared=True)[1] == 1
    assert build_identify_ns_independent()[1] == 0


def test_multi_controller_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="multi_controller"):
        ControllerConfig(multi_controller="yes")  # type: ignore[arg-type]
