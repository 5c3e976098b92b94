"""Scale-out of ``--engine ray``: 1, 2 and 3 device-bound nodes of a simulated cluster on this machine.

Each node of a :class:`ray.cluster_utils.Cluster` (all on 127.0.0.1) offers one
unit of the custom resource ``bench_dev`` and ``workers + 1`` CPUs, so it runs
one shard at a time; the head runs none. The session is the simulated device
at ``--ms`` per clip, slow enough that a node is bound by its device, not by
decoding, even with every node sharing this machine's two cores with other
people's work (tiny videos: 96x72, 4-6 s; 120 ms per clip: three nodes need
25 clips/s of decoding, well under one core). Then k nodes should finish k
times faster; the target is 3 nodes >= 2.5x one node.

Before any time is reported, every run's ``val.json`` must equal, byte for
byte, a single-host run's (``engine="local"``), and top-1/top-5/hits/failures
too. Per point: wall time of ``evaluate`` (driver side, median of
``--repeats``), speed-up over one node, and the overheads: cluster start-up
(the nodes' processes, paid once per cluster, not per run), driver connect
(``ray_startup``: joining the cluster), merge (building the one report),
per-shard overhead (shard seconds minus device-busy seconds: decode workers
spawning, session opening, the last batches draining), and the device-busy
fraction per node.

One shard per node by default (``--shards-per-node``): a shard pays
~1.5-2.5 s of pipeline start-up here (its decode workers and session), so with the engine's default of 4 shards per unit
(``--shards-per-node 0``) these tiny shards measure start-up more than
scale-out; on a real list (UCF-101 split 1: 3783 videos) a shard is minutes
long and the same cost is noise.

    python benchmarks/scale_out.py                 # ~4-5 min on 2 busy cores
    python benchmarks/scale_out.py --shards-per-node 0 --ms 50
    python benchmarks/scale_out.py --quick         # seconds (figures are noise)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, default_out, ucf_like, verdict, write_json

from e3d_stream import evaluate
from e3d_stream.run._config import EvalConfig

RESOURCE = "bench_dev"
TARGET = {"nodes": 3, "speedup": 2.5}
#: the one figure compared: keys of result.json that must match the single-host run
SAME_KEYS = ("top1", "top5", "hits", "failures", "clip_top1")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _pair(text: str, kind=float) -> tuple:
    a, b = text.replace("x", ",").split(",")
    return kind(a), kind(b)


def start_cluster(nodes: int, cpus: int):
    """A head (no shards) and ``nodes`` worker nodes with 1 ``bench_dev`` each, on loopback; returns (cluster, s)."""
    from ray.cluster_utils import Cluster

    t0 = time.perf_counter()
    # Ray's defaults otherwise (worker prestart on, as on a real cluster): only the placement is simulated
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=80 * 2**20))
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus, resources={RESOURCE: 1}, node_ip_address="127.0.0.1",
                         object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    return cluster, time.perf_counter() - t0


def check_same(out: Path, reference: tuple[bytes, dict], what: str) -> None:
    """Stop the benchmark unless ``out`` holds the single-host run's outputs."""
    val, ref = reference
    if (out / "val.json").read_bytes() != val:
        raise SystemExit(f"{what}: val.json differs from the single-host run's: no timing is reported")
    got = json.loads((out / "result.json").read_text())
    diff = [k for k in SAME_KEYS if got[k] != ref[k]]
    if diff or got["counts"]["clips"] != ref["counts"]["clips"]:
        raise SystemExit(f"{what}: result.json differs from the single-host run's in {diff or ['clips']}")


def run_point(base: EvalConfig, nodes: int, args, reference, scratch: Path) -> dict:
    """Start a k-node cluster, warm it up, time ``--repeats`` evaluations, check each, stop it."""
    cluster, start_s = start_cluster(nodes, args.workers + 1)
    try:
        cfg = base.replace(engine="ray", address=cluster.address, ray_resource=RESOURCE,
                           shards=args.shards_per_node * nodes or None)
        for _ in range(args.warmup):   # Ray workers start, imports are paged in: one small shard per node
            evaluate(cfg.replace(limit=nodes, shards=nodes))
        runs = []
        for r in range(args.repeats):
            out = scratch / f"n{nodes}_r{r}"
            t0 = time.perf_counter()
            report = evaluate(cfg.replace(output=str(out)))
            wall = time.perf_counter() - t0
            check_same(out, reference, f"{nodes} node(s), run {r}")
            shards = report.throughput["shards"]
            device_s = report.timings.get("device_busy", 0.0)
            runs.append({
                "wall_s": wall,
                "driver_wall_s": report.timings["wall"],
                "connect_s": report.timings["ray_startup"],
                "merge_s": report.timings["merge"],
                "shards": len(shards),
                # the longest shard on its node, start-up of its pipeline included; wall adds Ray's scheduling
                # and worker start-up (importing the package in a fresh worker) around it
                "slowest_shard_s": max(s["seconds"] for s in shards),
                "nodes_used": report.throughput["nodes"],
                "clips": report.n_clips,
                "clips_per_s": report.n_clips / wall,
                "device_s": device_s,
                "device_busy_fraction_per_node": device_s / (nodes * wall),
                # what a shard spends not computing: decode workers starting, session opening, draining
                "shard_overhead_s_mean": statistics.mean(s["seconds"] - s["device_busy_s"] for s in shards),
                "attempts": [s["attempts"] for s in shards],
            })
    finally:
        t0 = time.perf_counter()
        cluster.shutdown()
        stop_s = time.perf_counter() - t0
    best = min(runs, key=lambda r: r["wall_s"])
    return {"nodes": nodes, "cluster_start_s": start_s, "cluster_stop_s": stop_s,
            "median_wall_s": statistics.median(r["wall_s"] for r in runs), "best": best, "runs": runs}


def plot(points: list[dict], path: Path) -> None:
    """Left: wall time against nodes, with the ideal 1/k line. Right: speed-up, with the target."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nodes = [p["nodes"] for p in points]
    wall = [p["median_wall_s"] for p in points]
    speed = [p["speedup"] for p in points]
    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(nodes, wall, "o-", label="measured")
    ax.plot(nodes, [wall[0] / n for n in nodes], "--", color="grey", label="ideal (1 node / k)")
    ax.set(xlabel="nodes", ylabel="wall (s)", title="evaluate(engine='ray') wall time", xticks=nodes)
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    ax.bar(nodes, speed, color="tab:green")
    ax.plot(nodes, nodes, "--", color="grey", label="linear")
    ax.axhline(TARGET["speedup"], color="tab:red", lw=1, label=f"target {TARGET['speedup']}x at {TARGET['nodes']}")
    ax.set(xlabel="nodes", ylabel="speed-up over 1 node", title="scale-out (device-bound nodes)", xticks=nodes)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=90)
    p.add_argument("--seconds", type=_pair, default=(4.0, 6.0), help="video length range, e.g. 4,6")
    p.add_argument("--size", type=lambda t: _pair(t, int), default=(96, 72), help="video size WxH")
    p.add_argument("--ms", type=float, default=120.0, help="simulated device latency per clip")
    p.add_argument("--nodes", type=_ints, default=(1, 2, 3))
    p.add_argument("--workers", type=int, default=1, help="decode workers per shard")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--shards-per-node", type=int, default=1,
                   help="shards = this x nodes; 0: the engine's default (4 per unit of the resource)")
    p.set_defaults(repeats=1, warmup=1)
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.ms, args.nodes, args.warmup = 4, (1.0, 1.5), 5.0, (1, 2), 0
    try:
        import ray  # noqa: F401
    except ImportError:
        print("scale_out: Ray is not installed (pip install 'e3d_stream[ray]')", file=sys.stderr)
        return 2
    # the nodes this script starts inherit it: no token file for a throw-away loopback cluster
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    data = ucf_like(args.workdir, args.videos, seed=args.seed, seconds=args.seconds, size=args.size)
    base = EvalConfig.create(video_path=str(data.video_root), annotation_path=str(data.annotation_path),
                             backend="simulated", batch_size=args.batch, workers=args.workers, queue_depth=8,
                             session_options={"ms_per_clip": args.ms})
    scratch = Path(tempfile.mkdtemp(prefix="scale_out_", dir=args.workdir))
    # the reference: one host, no device latency (the simulated scores do not depend on it)
    local = scratch / "single_host"
    t0 = time.perf_counter()
    evaluate(base.replace(output=str(local), session_options={"ms_per_clip": 0.0}))
    decode_s = time.perf_counter() - t0
    reference = ((local / "val.json").read_bytes(), json.loads((local / "result.json").read_text()))
    points = [run_point(base, k, args, reference, scratch) for k in args.nodes]
    one = points[0]["median_wall_s"] * points[0]["nodes"]   # (1 node first: the default grid)
    slowest_one = points[0]["best"]["slowest_shard_s"] * points[0]["nodes"]
    for pt in points:
        pt["speedup"] = one / pt["median_wall_s"]
        pt["speedup_slowest_shard"] = slowest_one / pt["best"]["slowest_shard_s"]
    by_nodes = {pt["nodes"]: pt for pt in points}
    target = by_nodes.get(TARGET["nodes"])
    clips = reference[1]["counts"]["clips"]
    doc = {
        "what": "evaluate(engine='ray') on a simulated cluster (ray.cluster_utils.Cluster, all nodes on this host)",
        "videos": args.videos, "clips": clips, "frames": data.n_frames, "size": list(args.size),
        "ms_per_clip": args.ms, "batch_size": args.batch, "workers_per_shard": args.workers,
        "device_bound_clips_per_s_per_node": 1000.0 / args.ms,
        "single_host_decode_only_s": decode_s,
        "outputs_identical_to_single_host": True,   # check_same stopped the run otherwise
        "points": points,
        "target": {**TARGET, "measured": target["speedup"] if target else None,
                   "verdict": verdict(target["speedup"] >= TARGET["speedup"]) if target else "n/a"},
    }
    out = default_out(args, "scale_out")
    write_json(out, doc)
    if args.plot:
        plot(points, out.with_suffix(".png"))
    for pt in points:
        b = pt["best"]
        print(f"{pt['nodes']} node(s): wall {pt['median_wall_s']:.2f} s  speed-up {pt['speedup']:.2f}x "
              f"(slowest shard {b['slowest_shard_s']:.1f} s: {pt['speedup_slowest_shard']:.2f}x)  "
              f"{b['clips_per_s']:.1f} clips/s  shards {b['shards']}  device busy/node "
              f"{b['device_busy_fraction_per_node']:.2f}  connect {b['connect_s']:.2f} s  merge "
              f"{1000 * b['merge_s']:.1f} ms  shard overhead {b['shard_overhead_s_mean']:.2f} s  "
              f"cluster start {pt['cluster_start_s']:.1f} s")
    if target:
        print(f"target {TARGET['speedup']}x at {TARGET['nodes']} nodes: {target['speedup']:.2f}x "
              f"{doc['target']['verdict']}")
    print(f"outputs identical to the single-host run ({clips} clips); results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
