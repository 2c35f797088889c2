"""Every test session is hermetic, and a first run: it writes nothing into the user's home and
finds none of the data the machine already has.

At configuration, before any test module is imported (so before anything reads them), the
session gets a temporary folder of its own, removed at the end, and points at it:

- ``HOME``: an empty home. The product and the tests must write nothing into a home (Ray 2.60's
  ``ray.init`` writes a new ``~/.ray/auth_token`` when no token is configured, and every later
  ``ray start --head`` on that machine then demands it). Whatever lands in this home fails the
  session (``nothing_written_into_the_home``) with the list of paths; the user's own home never
  sees it;
- ``TFDS_DATA_DIR``: an empty data directory, so the embedded datasets are built as on a fresh
  machine, by the processes that race for them (a first-run failure cannot hide behind data this
  machine already holds);
- ``XDG_CACHE_HOME``, ``XDG_CONFIG_HOME``, ``RUSTUP_HOME``: where tools keep caches and settings
  on purpose, outside the home (matplotlib creates both XDG folders and caches its font list;
  pip asks ``rustc --version`` for its user agent, and rustup's ``rustc``, where installed,
  writes its settings into ``RUSTUP_HOME``, by default ``~/.rustup``);
- ``JAX_COMPILATION_CACHE_DIR``: JAX's persistent compilation cache, shared by the processes of
  the session (the pytest process, Ray's workers, ``star serve`` subprocesses), so that each
  job's new worker processes load what an earlier one compiled instead of compiling it again.
  It starts empty, like everything else here. ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is
  0 (``SESSION_SETTINGS``), as the service sets it for its own cache
  (``services.cluster.runtime``): the many small computations a job's processes start with
  (the optimizer's eager init, the outer step) are each under JAX's 1 s default, and together
  cost a learner ~2.5 s;
- ``TMPDIR``: temporary files and folders. Ray keeps each instance's session folder there, and
  tensorflow-datasets leaves an empty ``tmp*tfds`` folder for each builder of a dataset not yet
  built: they go with the session instead of piling up in ``/tmp``. The session folder itself is
  always made in the system's temporary folder (``SYSTEM_TMPDIR``), never in the ``TMPDIR`` of
  a session that started this one (pytest-xdist's workers): Ray's socket paths under it must
  stay under 108 bytes.

Tests that start Ray or any other process carry the ``processes`` marker, which ``make
test-fast`` deselects (``-m "not processes"``) and ``make test`` groups for pytest-xdist
(``mark_processes``). It is applied here to every test that uses the session's Ray (the
``ray_session`` fixture, so also ``running_service`` and ``client``) and to every test under
``tests/cluster``; other tests that start processes are marked in their module. A test
without the marker that starts a process anyway (``subprocess``, ``os.fork``,
``os.posix_spawn``, ``os.system``, ``os.exec*``, a multiprocessing spawn) fails with the command
it ran, so the fast selection stays free of processes (a library's own helper, such as
matplotlib's fc-list, is not counted: ``LIBRARY_HELPERS``).
"""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Environment variables the session points at folders of its own (name under the session root).
SESSION_FOLDERS = {
    "HOME": "home",
    "TFDS_DATA_DIR": "tensorflow_datasets",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "RUSTUP_HOME": "rustup",
    "JAX_COMPILATION_CACHE_DIR": "jax-cache",
    "TMPDIR": "tmp",
}
# The system's temporary folder, as the first session of a process tree found it.
SYSTEM_TMPDIR = "STAR_TESTS_SYSTEM_TMPDIR"
# Environment variables the session sets to values of its own.
SESSION_SETTINGS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
# Paths listed when the tests wrote into the home (the rest are counted).
LISTED_PATHS = 20

# The marker of tests that start Ray or other processes (make test-fast deselects it).
PROCESSES = "processes"
# Fixtures that start Ray (directly or through the fixtures they use).
RAY_FIXTURES = frozenset({"ray_session"})
# The pytest-xdist group of the tests that use the session's Ray.
SESSION_RAY_GROUP = "session-ray"
# Test folders whose every test starts processes (a Ray cluster of its own, star serve).
PROCESS_FOLDERS = ("cluster",)
# Audit events of starting a process (sys.audit; multiprocessing's spawn has none, see below).
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.exec"}
)
# Helpers a library runs once per session by itself, whichever test comes first: matplotlib
# lists the system's fonts with fc-list when it builds its font cache (in the session's fresh
# XDG_CACHE_HOME).
LIBRARY_HELPERS = frozenset({"fc-list"})

_root = pytest.StashKey[Path]()
_saved = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_saved] = {
        name: os.environ.get(name) for name in (*SESSION_FOLDERS, *SESSION_SETTINGS, SYSTEM_TMPDIR)
    }
    system_tmp = os.environ.setdefault(SYSTEM_TMPDIR, tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="star-tests-", dir=system_tmp))
    config.stash[_root] = root
    for name, folder in SESSION_FOLDERS.items():
        (root / folder).mkdir()
        os.environ[name] = str(root / folder)
    os.environ.update(SESSION_SETTINGS)
    tempfile.tempdir = None  # tempfile reads TMPDIR again


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in config.stash.get(_saved, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = None
    if _root in config.stash:
        shutil.rmtree(config.stash[_root], ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    folders = ", ".join(f"{name}={os.environ[name]}" for name in SESSION_FOLDERS)
    return f"session folders: {folders}"


def written_paths(home: Path) -> list[str]:
    """Everything under ``home``, relative to it, sorted."""
    return sorted(str(path.relative_to(home)) for path in home.rglob("*"))


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_home():
    """After the whole session (every other fixture torn down): the home is still empty."""
    home = Path(os.environ["HOME"])
    yield home
    written = written_paths(home)
    listed = ", ".join(written[:LISTED_PATHS])
    more = f" and {len(written) - LISTED_PATHS} more" if len(written) > LISTED_PATHS else ""
    assert not written, f"the tests wrote into their home {home}: {listed}{more}"


# ----- tests that start Ray or other processes ---------------------------------------------------


@pytest.hookimpl(wrapper=True)  # before every plugin's hook: -m and pytest-xdist read the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    tests = Path(__file__).parent
    for item in items:
        mark_processes(item, tests)
    result = yield
    if config.getoption("loadgroup", default=False):  # an xdist worker of --dist loadgroup
        ungrouped = [i.nodeid for i in items if i.get_closest_marker("xdist_group")]
        ungrouped = [nodeid for nodeid in ungrouped if "@" not in nodeid.rpartition("]")[2]]
        if ungrouped:  # two workers would each start the session's Ray, or a module's cluster
            raise pytest.UsageError(
                f"pytest-xdist did not group {ungrouped[0]} (and {len(ungrouped) - 1} more):"
                " pyproject.toml pins the pytest versions whose node ids it can group"
            )
    return result


def mark_processes(item: pytest.Item, tests: Path) -> None:
    """The ``processes`` marker, and the pytest-xdist group of a test that starts processes.

    Under ``make test`` (``-n 2 --dist loadgroup``) a group runs in one worker, one test after
    the other: the tests of the session's Ray form one group (one Ray instance per session, as
    in a plain run), and the other tests that start processes are grouped by module (a module's
    fixtures, such as a multi-node cluster, start once). Everything else goes to whichever
    worker is free.
    """
    module = item.path.relative_to(tests)
    uses_ray = RAY_FIXTURES & set(getattr(item, "fixturenames", ()))
    if uses_ray or module.parts[0] in PROCESS_FOLDERS:
        item.add_marker(PROCESSES)
    if uses_ray:
        item.add_marker(pytest.mark.xdist_group(SESSION_RAY_GROUP))
    elif item.get_closest_marker(PROCESSES):
        item.add_marker(pytest.mark.xdist_group(module.as_posix()))


class ProcessGuard:
    """Records the processes started while a test without the ``processes`` marker runs."""

    def __init__(self) -> None:
        self.unmarked = False  # the running phase belongs to an unmarked test
        self.started: list[str] = []

    def audit(self, event: str, args: tuple) -> None:
        if not self.unmarked or event not in PROCESS_EVENTS:
            return
        program = os.path.basename(str(args[0])) if args else ""
        if program not in LIBRARY_HELPERS:
            self.started.append(f"{event} {' '.join(map(str, args[:2]))}"[:300])


_guard = ProcessGuard()
sys.addaudithook(_guard.audit)  # hooks cannot be removed; the guard is idle outside tests
_spawnv_passfds = multiprocessing.util.spawnv_passfds


def _audited_spawnv_passfds(path, args, passfds):
    sys.audit("os.posix_spawn", path, args)  # multiprocessing's spawn raises no event itself
    return _spawnv_passfds(path, args, passfds)


multiprocessing.util.spawnv_passfds = _audited_spawnv_passfds


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _guard.unmarked = item.get_closest_marker(PROCESSES) is None
    _guard.started = []
    try:
        return (yield)
    finally:
        _guard.unmarked = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "teardown" and _guard.started and report.passed:
        started = "\n  ".join(_guard.started)
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started processes without the {PROCESSES!r} marker"
            f" (make test-fast runs it):\n  {started}"
        )
    return report
