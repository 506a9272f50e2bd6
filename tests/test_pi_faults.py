"""Fault rules on protection information (docs/faults.md): ``corrupt-pi=guard|app|ref``
corrupts one tag of what a Read returns, so the host's own verification catches it, and
``status`` takes the end-to-end statuses by name. The host side verifies against the
tests' reference (tests/pimodel.py), as Linux's block layer does.
"""

from __future__ import annotations

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Host
from nvmefast.testing import pi as hpi
from pimodel import APP_CHECK, GUARD_CHECK, INVALID_PI, PRACT, PRCHK_APP, PRCHK_GUARD, PRCHK_REF, REF_CHECK, Fmt

FMTS = {
    "512+8-t1": Fmt(512, 8, 1),
    "4096+16-t1-crc64": Fmt(4096, 16, 1, guard="crc64"),
    "4096+64-t2-first-ext": Fmt(4096, 64, 2, True, extended=True),
}


def _host_checks(f: Fmt, data: bytes, md: bytes, slba: int) -> int:
    """What a host verifying every tag finds (Linux checks guard and reference tag)."""
    return f.check(data, md, len(data) // f.lba, PRCHK_GUARD | PRCHK_APP | PRCHK_REF, slba, 0x1111, 0xFFFF)


@pytest.mark.parametrize("field", ["guard", "app", "ref"])
@pytest.mark.parametrize("name", FMTS)
def test_corrupt_pi_reaches_the_host(name: str, field: str) -> None:
    f = FMTS[name]
    with Controller(ControllerConfig(namespaces=[f.namespace(1 << 20)])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        fmt = hpi.namespace_format(host, 1)
        slba, nlb = 10, 2
        data = f.data(nlb)
        sent = None if f.stripped(PRACT) else f.metadata(nlb)
        assert hpi.write(host, 1, slba, data, sent, prinfo=PRACT, ilbrt=slba, lbat=0x1111, fmt=fmt).ok
        rule = ctrl.faults.add(f"read nsid=1 lba={slba} count=1 -> corrupt-pi={field}")
        # The device checks the stored PI (intact) and passes: the corruption is in what it returns.
        r = hpi.read(host, 1, slba, nlb, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=slba, fmt=fmt)
        assert r.ok and rule.hits == 1 and r.data == data
        want = {"guard": GUARD_CHECK, "app": APP_CHECK, "ref": REF_CHECK}[field]
        assert _host_checks(f, r.data, r.metadata, slba) == want
        # Only the first block, and only that read: the stored PI is intact.
        assert _host_checks(f, r.data[f.lba :], r.metadata[f.ms :], slba + 1) == 0
        again = hpi.read(host, 1, slba, nlb, fmt=fmt)
        assert _host_checks(f, again.data, again.metadata, slba) == 0


@pytest.mark.parametrize(("field", "status"), [("guard", GUARD_CHECK), ("app", APP_CHECK), ("ref", REF_CHECK)])
@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=1 << 20, metadata_size=8, pi_type=1)])
def test_corrupt_pi_before_the_device_strips_it(host: Host, field: str, status: int) -> None:
    """PRACT with 8 bytes of metadata returns no PI to corrupt: the corruption meets the
    device's own check instead, and the Read fails with the end-to-end status."""
    assert hpi.write(host, 1, 0, bytes(range(256)) * 2, prinfo=PRACT, ilbrt=0, lbat=0x42).ok
    host.controller.faults.add(f"read lba=0 count=1 -> corrupt-pi={field}")
    r = hpi.read(host, 1, 0, 1, prinfo=PRACT | PRCHK_GUARD | PRCHK_APP | PRCHK_REF, ilbrt=0, lbat=0x42,
                 lbatm=0xFFFF)  # fmt: skip
    assert (r.completion.sct << 8 | r.completion.sc) == status


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("end-to-end-guard-check-error", GUARD_CHECK),
        ("end-to-end-app-tag-check-error", APP_CHECK),
        ("end-to-end-ref-tag-check-error", REF_CHECK),
        ("invalid-protection-info", INVALID_PI),
    ],
)
@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=1 << 20, metadata_size=8, pi_type=1)])
def test_status_rules_take_the_end_to_end_statuses(host: Host, name: str, value: int) -> None:
    host.controller.faults.add(f"write count=1 -> status {name} dnr")
    r = hpi.write(host, 1, 0, bytes(512), prinfo=PRACT, ilbrt=0)
    assert (r.completion.sct << 8 | r.completion.sc, r.completion.dnr) == (value, True)
    assert hpi.write(host, 1, 0, bytes(512), prinfo=PRACT, ilbrt=0).ok


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=1 << 20, metadata_size=8, pi_type=1)])
@pytest.mark.nvme_faults("read lba=5 -> corrupt-pi=ref")
def test_corrupt_pi_from_the_pytest_marker(nvme_host: Host) -> None:
    assert hpi.write(nvme_host, 1, 5, bytes(512), prinfo=PRACT, ilbrt=5).ok
    r = hpi.read(nvme_host, 1, 5, 1)
    assert r.ok and int.from_bytes(r.metadata[4:8], "big") != 5
