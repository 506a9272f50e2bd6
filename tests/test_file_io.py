"""test_io.py's data-path tests (PRPs of every shape, queue wrap, many
queues in flight) again, every namespace in a file, once per way of serving
a file; see test_file_conformance.py for how."""

from __future__ import annotations

from fileutil import drop_tests_without_ram
from test_file_conformance import _served_as_asked, config, file_mode  # noqa: F401 - the fixtures
from test_io import *  # noqa: F403 - the same tests, served from files

drop_tests_without_ram(globals())
