"""``nvmefast.pytest_plugin``: a user's test of their driver in three lines.

Each test writes a user's test file and runs pytest on it (``pytester``),
so the plugin is exercised as a user gets it: loaded through its entry
point, its fixtures and markers used with no conftest.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def test_entry_point_loads_the_plugin_and_fixtures_work(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        def test_roundtrip(nvme_host):
            nvme_host.write(1, 0, b"x" * 512)
            assert nvme_host.read(1, 0, 1) == b"x" * 512

        def test_default_config(nvme_config, nvme_controller):
            assert len(nvme_config.namespaces) == 1
            assert nvme_controller.namespace_info(1)["size_bytes"] == 16 << 20
        """
    )
    r = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    r.assert_outcomes(passed=2)


def test_markers_configure_controller_host_and_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import socket
        import pytest
        from nvmefast import NamespaceConfig

        @pytest.mark.nvme_config(serial="MY-SERIAL", namespaces=[
            {"size_bytes": 1 << 20, "lba_size": 4096},
            NamespaceConfig(size_bytes=2 << 20)])
        @pytest.mark.nvme_host(queues=2, irq=False, entries=8)
        def test_two_namespaces_two_queues(nvme_host):
            assert nvme_host.identify_controller().sn == "MY-SERIAL"
            assert nvme_host.lba_size(1) == 4096 and nvme_host.lba_size(2) == 512
            nvme_host.write(2, 3, b"y" * 512, qid=2)
            assert nvme_host.read(2, 3, 1, qid=2) == b"y" * 512
            assert nvme_host.read(1, 0, 1, qid=1) == bytes(4096)

        @pytest.mark.nvme_host(queues=0)
        def test_no_io_queues(nvme_host):
            nvme_host.create_io_queue_pair(1)
            nvme_host.write(1, 0, b"z" * 512)

        @pytest.mark.nvme_server(doorbells="trap")
        def test_server(nvme_server):
            assert nvme_server.doorbells == "trap"
            s = socket.socket(socket.AF_UNIX)
            s.connect(nvme_server.path)
            s.close()
        """
    )
    r = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    r.assert_outcomes(passed=3)


def test_bad_marker_options_fail_setup_with_a_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.nvme_host(irqs=True)
        def test_typo(nvme_host):
            pass

        @pytest.mark.nvme_config(sereal="x")
        def test_field_typo(nvme_controller):
            pass

        @pytest.mark.nvme_config(max_io_queue_pairs=0)
        def test_invalid_value(nvme_controller):
            pass

        @pytest.mark.nvme_server(doorbells="carrier-pigeon")
        def test_bad_server(nvme_server):
            pass
        """
    )
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(errors=4)
    out = r.stdout.str()
    assert "unknown option(s) ['irqs']" in out
    assert "['sereal'] are not ControllerConfig fields" in out
    assert "max_io_queue_pairs" in out
    assert "doorbells must be one of" in out


def test_nvme_faults_marker_installs_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest
        from nvmefast import CommandError
        from nvmefast.faults import FaultRule

        @pytest.mark.nvme_faults("read lba=7 count=1 -> status unrecovered-read-error dnr",
                                 FaultRule("transfer-error", opcode=0x01, count=1))
        def test_driver_sees_the_errors(nvme_host, nvme_controller):
            with pytest.raises(CommandError) as e:
                nvme_host.read(1, 7, 1)
            assert (e.value.sct, e.value.sc, e.value.dnr) == (2, 0x81, True)
            nvme_host.read(1, 7, 1)
            with pytest.raises(CommandError):
                nvme_host.write(1, 0, b"w" * 512)
            assert [r["hits"] for r in nvme_controller.faults] == [1, 1]

        @pytest.mark.nvme_faults("admin identify -> never")
        def test_server_controller_gets_them_too(nvme_server):
            assert len(nvme_server.controller.faults) == 1

        @pytest.mark.nvme_faults("read -> explode")
        def test_bad_rule(nvme_controller):
            pass
        """
    )
    r = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    r.assert_outcomes(passed=2, errors=1)
    assert "unknown action 'explode'" in r.stdout.str()
