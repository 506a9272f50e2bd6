"""The NVM command set conformance tests again, every namespace in a file.

The tests are test_conformance_io.py's, test_conformance_copy.py's and
test_conformance_sgl.py's, imported as they are; only the ``config``
fixture changes: each ram namespace becomes a sparse file of its size, once
per way of serving a file (io_uring and the thread pool, each direct on a
disk file system and buffered on tmpfs, and the thread pool forced by
NVMEFAST_FILE_IO with io="auto"). Both I/O paths thus pass the same tests
as memory does, byte for byte. test_file_io.py does the same for test_io.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fileutil import ENV_THREADS, MODES, FileMode, drop_tests_without_ram, environment, in_files, scratch_dir
from nvmefast import Controller, ControllerConfig
from test_conformance_copy import *  # noqa: F403 - the same tests, served from files
from test_conformance_io import *  # noqa: F403
from test_conformance_sgl import *  # noqa: F403

# Tests of null namespaces only have nothing to serve from a file: not collected.
drop_tests_without_ram(globals())


@pytest.fixture(params=[*MODES, ENV_THREADS])
def file_mode(request: pytest.FixtureRequest) -> FileMode:
    """How the test's file namespaces are served."""
    mode: FileMode = request.param
    return mode


@pytest.fixture
def config(config: ControllerConfig, file_mode: FileMode) -> Iterator[ControllerConfig]:
    """The test's own config with its ram namespaces in files."""
    # drop_tests_without_ram took out the tests this would not apply to.
    assert any(ns.backend == "ram" for ns in config.namespaces), "no ram namespace to serve from a file"
    with scratch_dir(file_mode.directory) as directory, environment(file_mode.env):
        yield in_files(config, file_mode, directory)


@pytest.fixture(autouse=True)
def _served_as_asked(request: pytest.FixtureRequest, file_mode: FileMode) -> None:
    # A test that passes on the wrong path proves nothing about the right one.
    if "controller" not in request.fixturenames:
        return
    controller: Controller = request.getfixturevalue("controller")
    for nsid, ns in enumerate(controller.config.namespaces, start=1):
        if ns.backend == "file":
            info = controller.namespace_info(nsid)
            assert (info["io"], info["cache"]) == (file_mode.expected_io, file_mode.cache), info
