"""The ray engine: shards on a simulated 3-node cluster give exactly a single host's outputs.

One :class:`ray.cluster_utils.Cluster` serves the module: a head that runs no
shards and three worker nodes on 127.0.0.1, each offering 1 unit of the custom
resource ``e3d_dev`` and 2 CPUs (one shard at a time: 1 decode worker + the
consumer). The model is the ``simulated`` backend (deterministic per-clip
logits) or, in one test, ONNX Runtime on CPU, so "equal to a single-host run"
is checked to the byte on ``val.json``.

Faults are placed, not timed: a test producer (written to a temporary module
the cluster's workers import) holds a chosen video until a release file
exists, so a shard is provably in flight when its node is removed or the
driver is interrupted, and the retried or resumed attempt passes straight on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from media import make_annotation, make_numbered_video

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from e3d_stream.errors import (  # noqa: E402
    BackendUnavailableError,
    ConfigError,
    DecodeError,
    ResumeMismatchError,
    WorkerError,
)
from e3d_stream.run._config import EvalConfig  # noqa: E402
from e3d_stream.run._evaluate import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESOURCE = "e3d_dev"
N_NODES = 3
NODE = dict(num_cpus=2, resources={RESOURCE: 1}, node_ip_address="127.0.0.1", object_store_memory=80 * 2**20)
# a removed node is declared dead in ~1.5 s instead of ~15 s; no idle workers started ahead of demand
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3,
                 "enable_worker_prestart": False}

PRODUCER_MODULE = "e3d_ray_test_producers"
PRODUCER_SOURCE = '''
import os
import time


def held_clips(path, *, hold, marker_dir, **options):
    """iter_video_clips, but the video ``hold`` waits for ``<marker_dir>/release`` (first marking it started)."""
    from e3d_stream.video._clips import iter_video_clips

    stem = os.path.splitext(os.path.basename(str(path)))[0]
    release = os.path.join(marker_dir, "release")
    if stem == hold and not os.path.exists(release):
        # the decode worker's parent is the Ray worker running the shard
        open(os.path.join(marker_dir, f"started_{os.getppid()}"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
    return iter_video_clips(path, **options)
'''


# ---------------------------------------------------------------------------------------- the cluster

def _shm_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("e3d_")}


def _dead_creator(name: str) -> bool:
    try:
        return not psutil.pid_exists(int(name.split("_")[1]))
    except (IndexError, ValueError):
        return False


def _started_with(variable: str, marker: str) -> list[str]:
    """Live processes whose environment variable ``variable`` holds ``marker``, as "pid cmdline"
    (not this one, nor its own multiprocessing resource tracker, which lives as long as it does)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE \
                    or marker not in p.environ().get(variable, ""):
                continue
            cmdline = " ".join(p.cmdline())
            if not (p.ppid() == os.getpid() and "resource_tracker" in cmdline):
                found.append(f"{p.pid} {cmdline[:120]}")
        except (psutil.Error, OSError):
            pass
    return found


class _Handle:
    """The module's cluster, topped up to N_NODES worker nodes before each test."""

    def __init__(self, cluster: Cluster, producers: Path) -> None:
        self.cluster, self.producers = cluster, producers
        self.workers = [cluster.add_node(**NODE) for _ in range(N_NODES)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def top_up(self) -> None:
        while len(self.workers) < N_NODES:
            self.workers.append(self.cluster.add_node(**NODE))
        self.cluster.wait_for_nodes()

    def node_of_worker(self, pid: int):
        """The worker node whose raylet started the Ray worker ``pid``."""
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
        for node in self.workers:
            raylet = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
            if raylet in ancestors:
                return node
        raise AssertionError(f"pid {pid} belongs to no worker node")

    def remove(self, node) -> None:
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    producers = tmp_path_factory.mktemp("producers")
    (producers / f"{PRODUCER_MODULE}.py").write_text(PRODUCER_SOURCE)
    shm_before = _shm_segments()
    with pytest.MonkeyPatch.context() as mp:
        # the nodes and their workers inherit this environment: no auth token file, the test producer importable
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("PYTHONPATH", os.pathsep.join([str(producers), str(ROOT), os.environ.get("PYTHONPATH", "")]))
        c = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=80 * 2**20,
            _system_config=SYSTEM_CONFIG))
        try:
            handle = _Handle(c, producers)
            c.wait_for_nodes()
            yield handle
        finally:
            c.shutdown()
    # nothing of the cluster outlives the module: no process it started (they all carry the producers
    # folder in PYTHONPATH, whatever name they give themselves), no ring segment
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = _started_with("PYTHONPATH", str(producers))
        leaked = [n for n in _shm_segments() - shm_before if _dead_creator(n)]
        if not left and not leaked:
            break
        time.sleep(0.2)
    assert not left, f"Ray processes outlived the cluster: {left}"
    assert not leaked, f"shared-memory segments outlived their processes: {leaked}"


@pytest.fixture
def nodes(cluster) -> _Handle:
    cluster.top_up()
    return cluster


# ---------------------------------------------------------------------------------------- the data

GOOD = [(f"v_{'AB'[i % 2]}_g{i:02d}_c01", "AB"[i % 2], 20 + 9 * (i % 4)) for i in range(12)]
MISSING, BROKEN = "v_B_g90_c01", "v_A_g91_c01"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """12 short videos (1-3 clips each), a listed video with no file and an empty (broken) one."""
    root = tmp_path_factory.mktemp("videos")
    for n, (vid, label, frames) in enumerate(GOOD):
        make_numbered_video(root / label / f"{vid}.avi", frames, width=96, height=72, seed=n)
    (root / "A" / f"{BROKEN}.avi").write_bytes(b"")
    entries = [(vid, label, "validation") for vid, label, _ in GOOD]
    entries.insert(3, (MISSING, "B", "validation"))
    entries.insert(7, (BROKEN, "A", "validation"))
    return root, make_annotation(root / "ann.json", ["A", "B"], entries)


def _first_of(dataset, index: int, count: int) -> str:
    """The first video of shard ``index`` of ``count`` (the engine's split of the list)."""
    from e3d_stream.run._ray import plan_shards
    from e3d_stream.video._dataset import list_videos

    root, ann = dataset
    return plan_shards(list_videos(ann, root), count)[index].first


def _config(dataset, out: Path | None, **kw) -> EvalConfig:
    root, ann = dataset
    flat = dict(video_path=str(root), annotation_path=str(ann), backend="simulated", batch_size=3, workers=1,
                queue_depth=4, session_options={"ms_per_clip": 20.0})
    flat.update(kw)
    if out is not None:
        flat["output"] = str(out)
    return EvalConfig.create(**flat)


@pytest.fixture(scope="module")
def single_host(dataset, tmp_path_factory) -> tuple[bytes, dict]:
    """val.json bytes and result.json of the same evaluation on one host."""
    out = tmp_path_factory.mktemp("single_host")
    evaluate(_config(dataset, out))
    return (out / "val.json").read_bytes(), json.loads((out / "result.json").read_text())


def _assert_same_outputs(out: Path, single_host) -> dict:
    val, ref = single_host
    assert (out / "val.json").read_bytes() == val
    result = json.loads((out / "result.json").read_text())
    for key in ("top1", "top5", "hits", "failures", "clip_top1", "per_class", "mean_class_top1"):
        assert result.get(key) == ref.get(key), key
    for key in ("videos", "scored", "excluded", "warnings", "clips", "dropped_clips"):
        assert result["counts"][key] == ref["counts"][key], key
    assert not (out / "shards").exists() and not (out / "shards.json").exists()   # records go at the commit
    return result


def _check_shards(result: dict, n_items: int, count: int) -> list[dict]:
    shards = result["throughput"]["shards"]
    assert result["throughput"]["engine"] == "ray"
    assert [s["index"] for s in shards] == list(range(count))
    assert sum(s["videos"] for s in shards) == n_items
    assert all(s["node_ip"] == "127.0.0.1" and s["seconds"] > 0 for s in shards)
    return shards


# ---------------------------------------------------------------------------------------- the tests

def test_merged_outputs_equal_a_single_host_run(nodes, dataset, single_host, tmp_path):
    out = tmp_path / "out"
    report = evaluate(_config(dataset, out, engine="ray", address=nodes.address, ray_resource=RESOURCE))
    result = _assert_same_outputs(out, single_host)
    assert [f["video_id"] for f in result["failures"]] == [MISSING, BROKEN]
    # default: 4 shards per unit of the resource (3 units), never more than the 14 videos
    shards = _check_shards(result, 14, 12)
    assert all(s["attempts"] == 1 and not s["resumed"] for s in shards)
    assert shards[0]["first"] == GOOD[0][0] and shards[-1]["last"] == GOOD[-1][0]
    assert 1 <= result["throughput"]["nodes"] <= N_NODES
    assert report.n_videos == 14 and list(report.results) == list(json.loads(single_host[0])["results"])
    # the completed folder: a fresh run is refused, --resume returns it without touching the cluster
    with pytest.raises(ConfigError, match="holds the results of a completed run"):
        evaluate(_config(dataset, out, engine="ray", address="127.0.0.1:1"))
    again = evaluate(_config(dataset, out, engine="ray", address="127.0.0.1:1", resume=True))
    assert "already complete" in again.notes[0] and again.top1 == report.top1


def test_onnx_runtime_shards_equal_a_single_host_run(nodes, dataset, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from e3d_stream.models import build_model
    from e3d_stream.seed._export import export_onnx

    model = tmp_path / "mobilenetv2_w025.onnx"
    export_onnx(build_model("mobilenetv2", num_classes=2, width_mult=0.25), model, simplify=False)
    kw = dict(model=str(model), backend=None, session_options={}, threads=1, batch_size=4, limit=8)
    evaluate(_config(dataset, tmp_path / "local", **kw))
    evaluate(_config(dataset, tmp_path / "ray", engine="ray", address=nodes.address, ray_resource=RESOURCE,
                     shards=3, **kw))
    local = json.loads((tmp_path / "local" / "result.json").read_text())
    result = _assert_same_outputs(tmp_path / "ray", ((tmp_path / "local" / "val.json").read_bytes(), local))
    assert result["session"]["backend"] == "onnxruntime"
    _check_shards(result, 8, 3)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_node_lost_with_its_shard_in_flight_is_retried_elsewhere(nodes, dataset, single_host, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    held = _first_of(dataset, 1, 3)
    removed = {}

    def remove_the_node_running_it() -> None:
        deadline = time.monotonic() + 120
        while not list(marks.glob("started_*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        started = list(marks.glob("started_*"))
        if started:   # the shard is held inside its node: it cannot finish before the node is gone
            removed["worker"] = int(started[0].name.split("_")[1])
            node = nodes.node_of_worker(removed["worker"])
            removed["id"] = node.node_id
            nodes.remove(node)
            # node removal kills its processes asynchronously: release the hold only once the
            # attempt's worker is really gone, or a slow kill would let it finish (load-independent)
            gone_by = time.monotonic() + 120
            while _alive(removed["worker"]) and time.monotonic() < gone_by:
                time.sleep(0.05)
        (marks / "release").touch()   # the retried attempt passes straight on

    watcher = threading.Thread(target=remove_the_node_running_it)
    watcher.start()
    try:
        evaluate(_config(dataset, tmp_path / "out", engine="ray", address=nodes.address, ray_resource=RESOURCE,
                         shards=3, producer=f"{PRODUCER_MODULE}:held_clips",
                         producer_options={"hold": held, "marker_dir": str(marks)}))
    finally:
        (marks / "release").touch()
        watcher.join()
    assert removed, "the held shard never started"
    # a machine that dies takes its /dev/shm along; simulated on one host, the killed shard's ring stays
    for name in _shm_segments():
        if name.startswith(f"e3d_{removed['worker']}_"):
            os.unlink(f"/dev/shm/{name}")
    result = _assert_same_outputs(tmp_path / "out", single_host)
    shards = _check_shards(result, 14, 3)
    assert shards[1]["first"] == held
    assert shards[1]["attempts"] == 2 and shards[1]["node_id"] != removed["id"]
    assert len(shards[1]["retried_after"]) == 1
    assert [s["attempts"] for s in (shards[0], shards[2])] == [1, 1]


def _cli(dataset, out: Path, address: str, *extra: str) -> list[str]:
    root, ann = dataset
    return [sys.executable, "-m", "e3d_stream", "eval", "--video_path", str(root), "--annotation_path", str(ann),
            "--backend", "simulated", "--sim_ms_per_clip", "20", "--batch_size", "3", "--workers", "1",
            "--queue_depth", "4", "--output", str(out), "--no_progress", "--engine", "ray", "--address", address,
            "--ray_resource", RESOURCE, *extra]


def test_interrupted_driver_resumes_only_the_unfinished_shards(nodes, dataset, single_host, tmp_path):
    marks, out = tmp_path / "marks", tmp_path / "out"
    marks.mkdir()
    producer = ["--producer", f"{PRODUCER_MODULE}:held_clips", "--producer_options",
                json.dumps({"hold": _first_of(dataset, 2, 3), "marker_dir": str(marks)})]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(nodes.producers), str(ROOT)]))
    proc = subprocess.Popen(_cli(dataset, out, nodes.address, "--shards", "3", *producer), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # SIGINT once a shard is recorded while shard 2 is provably still running (held)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (
                list((out / "shards").glob("*.pkl")) and list(marks.glob("started_*"))):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"stopped by SIGINT; state saved in {out}" in err and "--resume" in err
    recorded = {int(p.stem) for p in (out / "shards").glob("*.pkl")}
    assert recorded and 2 not in recorded
    assert not (out / "result.json").exists() and not (out / "val.json").exists()
    # another shard count is not this run
    with pytest.raises(ResumeMismatchError, match="split into 3 shards"):
        evaluate(_config(dataset, out, engine="ray", address=nodes.address, resume=True, shards=4))
    (marks / "release").touch()
    rc = subprocess.run(_cli(dataset, out, nodes.address, "--resume", *producer), env=env, capture_output=True,
                        text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    result = _assert_same_outputs(out, single_host)
    shards = _check_shards(result, 14, 3)
    assert {s["index"] for s in shards if s["resumed"]} == recorded   # only the others ran again


def test_an_error_inside_a_shard_is_fatal_and_names_the_shard(nodes, dataset, tmp_path):
    # not an E3DError (int("two") in the simulated session): a WorkerError naming the shard
    with pytest.raises(WorkerError, match=r"shard \d of 2 \(videos v_\w+ \.\. v_\w+\).* failed: ValueError"):
        evaluate(_config(dataset, None, engine="ray", address=nodes.address, ray_resource=RESOURCE, shards=2,
                         session_options={"num_classes": "two"}))
    # the shard's own E3DError keeps its type: --strict and the missing video, first of shard 1 of 2 (items 3..6)
    with pytest.raises(DecodeError, match=rf"shard 1 of 2 \(videos {MISSING} \.\. {GOOD[5][0]}\).*: "
                                          rf"{MISSING}: missing"):
        evaluate(_config(dataset, None, engine="ray", address=nodes.address, ray_resource=RESOURCE, shards=2,
                         strict=True, limit=7))


def test_shards_are_contiguous_and_always_the_same():
    from e3d_stream.run._ray import plan_shards
    from e3d_stream.video._dataset import shard

    items = [type("Item", (), {"video_id": f"v{i}"})() for i in range(14)]
    for count in (1, 3, 12, 14):
        plans = plan_shards(items, count)
        assert plans == plan_shards(items, count)
        assert [it.video_id for p in plans for it in items[p.start:p.end]] == [it.video_id for it in items]
        assert all([it.video_id for it in items[p.start:p.end]] == [it.video_id for it in shard(items, p.index, count)]
                   for p in plans)


def test_what_cannot_be_sharded_or_resumed_is_refused_before_any_work(dataset, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="modelzoo"):
        evaluate(_config(dataset, None, engine="ray", compat="modelzoo"))
    with pytest.raises(ConfigError, match="dump_bins"):
        evaluate(_config(dataset, None, engine="ray", dump_bins=str(tmp_path / "b"), info_path=str(tmp_path / "i")))
    # an interrupted ray run's folder: a fresh run is pointed at --resume; --resume with nothing to resume fails
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "shards.json").write_text("{}")
    with pytest.raises(ConfigError, match="shard records of an interrupted engine='ray' run; continue it with"):
        evaluate(_config(dataset, tmp_path / "out", engine="ray"))
    with pytest.raises(ConfigError, match="nothing to resume"):
        evaluate(_config(dataset, tmp_path / "empty", engine="ray", resume=True))
    monkeypatch.setitem(sys.modules, "ray", None)   # as if Ray were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'e3d_stream\[ray\]'"):
        evaluate(_config(dataset, None, engine="ray"))


def test_without_an_address_a_loopback_instance_runs_and_goes(dataset, single_host, tmp_path, monkeypatch):
    mark = f"local-instance-{tmp_path.name}"
    monkeypatch.setenv("E3D_TEST_MARK", mark)   # inherited by every process the instance starts
    env_before = dict(os.environ)
    evaluate(_config(dataset, tmp_path / "out", engine="ray", shards=2))
    result = _assert_same_outputs(tmp_path / "out", single_host)
    _check_shards(result, 14, 2)   # node_ip 127.0.0.1: the instance was bound to loopback only
    assert dict(os.environ) == env_before
    deadline = time.monotonic() + 20
    while _started_with("E3D_TEST_MARK", mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _started_with("E3D_TEST_MARK", mark), "processes of the local Ray instance outlived the run"

