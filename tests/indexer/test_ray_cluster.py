"""A local Ray cluster in the tests: a head and a worker node on loopback, `clipsearch index --ray ADDRESS` run
against them as a user runs it (a driver process), a worker node killed mid-run, a driver killed mid-run and
run again; afterwards every image is in the store once, with a local run's vector (to float16) and a local
run's failures. One cluster for the module (starting one takes seconds); no Ray process outlives it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import sqlalchemy as sa

from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.specs import ModelSpec
from retrieval.storage.schema import ImageRow
from retrieval.storage.vectors import from_blob
from tests import imagefactory as factory
from tests.fresh import ROOT
from tests.libcheck import STORED_ATOL

if TYPE_CHECKING:
    from ray._private.node import Node

pytest.importorskip("ray.data", reason="the Ray tests need the ray extra: pip install 'clipsearch[ray]'")

pytestmark = [
    pytest.mark.slow,  # a Ray cluster, driver processes, kills
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the cluster's processes in Linux's /proc"),
]

IMAGES = 480
BROKEN = ("truncated.jpg", "empty.png", "notes.jpg")
BATCH = 16
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the driver connects to 127.0.0.1, not the machine's address
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout
}


class LocalCluster:
    """A Ray head (2 CPUs: an encode actor and a decode task still fit once the worker is gone) and a worker
    node (1 CPU), both on 127.0.0.1, their files in `temp`: Ray's own multi-node test cluster (`ray start`
    cannot keep a second node on loopback: it swaps 127.0.0.1 for the machine's address)."""

    def __init__(self, temp: Path) -> None:
        from ray.cluster_utils import Cluster  # Ray's own multi-node test cluster

        head = {"num_cpus": 2, "node_ip_address": "127.0.0.1", "temp_dir": str(temp), "include_dashboard": False}
        self.cluster = Cluster(initialize_head=True, head_node_args=head | {"object_store_memory": 300 << 20})
        self.worker: Node | None = None
        self.ensure_worker_node()
        self.address = self.cluster.address

    def ensure_worker_node(self) -> None:
        """A worker node again, if an earlier test killed it."""
        if self.worker is None:
            self.worker = self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=300 << 20)

    def _tree(self, roots: list[int]) -> list[int]:
        table = _process_table()
        return [pid for root in roots if root in table for pid in (root, *_descendants(root, table))]

    def kill_worker_node(self) -> list[str]:
        """SIGKILL the worker node's raylet and every process under it (its Ray workers); their command lines."""
        assert self.worker is not None
        table = _process_table()
        tree = self._tree([self.worker.all_processes["raylet"][0].process.pid])
        self.cluster.remove_node(self.worker, allow_graceful=False)
        self.worker = None
        for pid in tree:
            _kill(pid)
        return [table[pid][1] for pid in tree if pid in table]

    def stop(self) -> list[int]:
        """Shut the cluster down and kill what its shutdown leaves (Ray's agents outlive their raylet); the pids
        still alive after that, which should be none. Other Ray clusters on the machine are left alone."""
        tree = self._tree([child for child, (parent, _) in _process_table().items() if parent == os.getpid()])
        self.cluster.shutdown()
        deadline = time.monotonic() + 30
        while (left := [pid for pid in tree if pid in _process_table()]) and time.monotonic() < deadline:
            for pid in left:
                _kill(pid)
            time.sleep(0.2)
        return left


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process, from /proc (zombies left out)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            table[int(entry.name)] = (int(parent), cmdline)
    return table


def _descendants(pid: int, table: dict[int, tuple[int, str]]) -> list[int]:
    children = [child for child, (parent, _) in table.items() if parent == pid]
    return children + [grandchild for child in children for grandchild in _descendants(child, table)]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_for(condition: Callable[[], bool], seconds: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds}s for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # Ray's socket paths must stay under 107 bytes, so the cluster's folder is short, not under pytest's tmp_path.
    temp = Path(tempfile.mkdtemp(prefix="cs-ray-"))
    with pytest.MonkeyPatch.context() as patch:  # the nodes' workers import this checkout, as the driver does
        patch.setenv("PYTHONPATH", RAY_ENV["PYTHONPATH"])
        local = LocalCluster(temp)
    try:
        yield local
    finally:
        left = local.stop()
        shutil.rmtree(temp, ignore_errors=True)
        assert left == [], f"Ray processes outlived the test cluster: {left}"


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-photos")
    for seed in range(IMAGES):
        factory.pattern_png(root / f"{seed // 60}" / f"p{seed:04d}.png", seed=seed)
    factory.truncated_jpeg(root / BROKEN[0])
    factory.zero_byte(root / BROKEN[1])
    factory.text_as_image(root / BROKEN[2])
    return root


@pytest.fixture(scope="module")
def local_run(photo_root: Path, tiny_spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """The same files indexed by a local run: path -> (vector or None, error or None)."""
    with Library(tmp_path_factory.mktemp("ray-local") / "library", create=True) as library:
        encoder = library.encoder(tiny_spec, device="cpu", batch_size=BATCH)
        index_folders(library, encoder, [str(photo_root)], workers=1)
        return _rows_of(library.store.engine)


def _rows(url: str) -> dict[str, tuple]:
    engine = sa.create_engine(url)
    try:
        return _rows_of(engine)
    finally:
        engine.dispose()


def _rows_of(engine: sa.Engine) -> dict[str, tuple]:
    """path -> (vector or None, error or None) of every row, read straight from the store; no path twice."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ImageRow.path, ImageRow.vector, ImageRow.error)).all()
    assert len({row.path for row in rows}) == len(rows), "a path is stored twice"
    return {row.path: (from_blob(row.vector) if row.vector is not None else None, row.error) for row in rows}


def _count(url: str) -> int:
    """Rows committed so far (0 before the driver made the store; a SQLite file is never made here)."""
    location = sa.make_url(url)
    if location.get_backend_name() == "sqlite" and not Path(location.database or "").exists():
        return 0
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ImageRow)).scalar_one())
    except sa.exc.DBAPIError:  # not made yet (no file, no table)
        return 0
    finally:
        engine.dispose()


def _index_command(root: Path, library: Path, url: str, address: str, spec: ModelSpec) -> list[str]:
    code = "import sys; from indexer.cli import main; main(sys.argv[1:])"
    options = ["--library", str(library), "--database-url", url, "--model", spec.model, "--pretrained", "none"]
    ray = ["--ray", address, "--batch-size", str(BATCH), "--ray-decode-batch-size", "8", "--json"]
    return [sys.executable, "-c", code, "index", str(root), *options, *ray]


def _start_driver(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            command, cwd=ROOT, env=os.environ | RAY_ENV, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def _finish(driver: subprocess.Popen[bytes], log: Path) -> dict:
    assert driver.wait(timeout=600) == 0, log.read_text()
    return json.loads(log.read_text().strip().splitlines()[-1])


def _check_against_local(url: str, local: dict[str, tuple]) -> None:
    """Every file once, with the local run's vector (to float16) or its failure."""
    stored = _rows(url)
    assert sorted(stored) == sorted(local)
    for path, (vector, error) in local.items():
        assert stored[path][1] == error, path
        if vector is None:
            assert stored[path][0] is None, path
        else:
            np.testing.assert_allclose(stored[path][0], vector, rtol=0, atol=STORED_ATOL, err_msg=path)
    assert sum(error is not None for _, error in stored.values()) == len(BROKEN)


def test_a_worker_node_and_the_driver_killed_mid_run_lose_nothing(
    cluster: LocalCluster,
    photo_root: Path,
    local_run: dict[str, tuple],
    store_url: str,
    tiny_spec: ModelSpec,
    tmp_path: Path,
) -> None:
    """On SQLite and on PostgreSQL: once the driver has committed a batch, the worker node is killed (SIGKILL:
    its raylet and Ray workers); Ray reruns its tasks and restarts its actors on the head, and batches keep
    coming. Then the driver is killed (SIGKILL) too. Running it again embeds only what was not committed, and
    the store ends as a local run's: every image once, its vector (to float16) or its failure."""
    cluster.ensure_worker_node()
    command = _index_command(photo_root, tmp_path / "library", store_url, cluster.address, tiny_spec)
    driver = _start_driver(command, tmp_path / "driver.log")
    _wait_for(lambda: _count(store_url) >= BATCH or driver.poll() is not None, 300, "a committed batch")
    assert driver.poll() is None, (tmp_path / "driver.log").read_text()
    killed = cluster.kill_worker_node()
    assert any(name.startswith("ray::") for name in killed), killed  # the node ran Ray workers
    before = _count(store_url)
    # Once the lost work is redone, results come in bursts (a run of 240 went from 80 rows to 192 within one
    # 0.2 s poll, and once to the end): look often, and kill the driver as soon as 2 batches are in.
    after = before + 2 * BATCH
    _wait_for(lambda: _count(store_url) >= after or driver.poll() is not None, 300, "batches after", interval=0.01)
    assert driver.poll() is None, (
        "the run ended before the driver could be killed: " + (tmp_path / "driver.log").read_text()
    )
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    committed = _count(store_url)
    assert after <= committed < IMAGES, committed

    report = _finish(_start_driver(command, tmp_path / "again.log"), tmp_path / "again.log")
    assert report["embedded"] + report["failed"] == IMAGES + len(BROKEN) - committed
    _check_against_local(store_url, local_run)
