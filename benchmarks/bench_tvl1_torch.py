"""TV-L1 in torch (flow method tvl1_torch) against OpenCV's DualTVL1: agreement, speed, and what
it asks of a GPU.

    PYTHONPATH=workflow python benchmarks/bench_tvl1_torch.py                 # CPU, writes docs/benchmarks.md
    PYTHONPATH=workflow python benchmarks/bench_tvl1_torch.py --count         # launches and waits, on the CPU
    PYTHONPATH=workflow python benchmarks/bench_tvl1_torch.py --device cuda   # on a GPU, one command

1. Agreement on the real clips of tests/fixtures/videos at short side 256: the first --frames
   frames of each, end-point difference of the flow clipped to +-20 px (what the stage stores)
   between torch and OpenCV (one thread), its distribution over all pixels; with OpenCV's
   per-pair stopping test (the default) and with a fixed iteration count (`stopping: fixed`,
   on the first --fixed-pairs pairs).
2. Known motion: a textured image shifted by (2.3, -1.6) px, and turned by 1.5 degrees, scaled by
   1.01 about its centre and shifted by (1.3, -0.7) px (up to 4.8 px); error against the true
   field 16 px from the borders, torch and OpenCV.
3. Speed per core: --speed-pairs of the 341x256 pairs of part 1, one thread each, OpenCV, torch
   unfused, torch fused with torch.compile (by batch size), with the default and the fixed
   iteration count, in the same run.
4. End to end (`stresnet flow`'s compute_shard): frames read from a shard, flow computed,
   quantised, JPEG encoded, shard written, for the 341x256 clips' first --e2e-frames frames
   (--e2e-repeat copies of each, for a run long enough on a GPU);
   tvl1_torch on --device beside OpenCV's tvl1 (CPU only), both with --threads.
--count: for batches (--count-batches) of the 341x256 pairs, what CUDA's schedule launches and
   how often the host waits (benchmarks/tvl1_launches.py), counted on the CPU; with
   --count-before FILE, also for an older tvl1_torch.py (e.g. `git show
   main:workflow/stresnet/tvl1_torch.py > before.py`).
--device cuda: cuda_figures (pairs/s by batch, compile and capture time, memory per pair, the
   device's busy share, the flow against the CPU solver's) and the end-to-end run on the GPU.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import os
import tempfile
import time
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import torch

from common import kernel_share, video_files, write_section
from stresnet import tvl1_torch
from stresnet.cuda_graphs import GraphedFunction
from stresnet.flow import compute_shard
from stresnet.flow_torch import PairSolver, resolve_batch
from stresnet.frames import frames_attrs
from stresnet.store import ShardWriter, encode_jpeg
from stresnet.video import VideoReader
from tvl1_launches import count_solve

SIDE, BOUND = 256, 20.0
PERCENTILES = (50, 90, 99, 99.9)


def clip_frames(root: Path, n: int) -> dict[str, list[np.ndarray]]:
    """RGB frames 0 ... n-1 of every clip under root at short side 256."""
    return {q: list(itertools.islice(VideoReader(root / q, SIDE), n)) for q in video_files(root)}


def grey(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]


def opencv_flows(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], float]:
    """OpenCV's TV-L1, one thread: the flows and seconds per pair."""
    cv2.setNumThreads(1)
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    began = time.perf_counter()
    flows = [algo.calc(a, b, None) for a, b in pairs]
    return flows, (time.perf_counter() - began) / len(pairs)


def torch_flows(pairs: list[tuple[np.ndarray, np.ndarray]], device: torch.device, compile: bool, batch: int,
                params: dict | None = None) -> tuple[list[np.ndarray], float]:
    """tvl1_torch's flows in batches of `batch` pairs, after a warm-up (compilation) on the first
    batch: the flows and seconds per pair."""
    solve = PairSolver(params or {}, device, compile)
    solve(pairs[:batch])
    began = time.perf_counter()
    flows = [f for k in range(0, len(pairs), batch) for f in solve(pairs[k:k + batch])]
    return flows, (time.perf_counter() - began) / len(pairs)


def repeated(pairs: list, n: int) -> list:
    return (pairs * -(-n // len(pairs)))[:n]


def stacked(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(np.stack(side)) for side in zip(*pairs))  # type: ignore[return-value]


def with_cuda_schedule(solver: object) -> object:
    """A CPU solver that iterates as on CUDA: this branch's Schedule and the graphs' static
    buffers (GraphedFunction, without graphs), or an older solver's `check_every` of 10."""
    if hasattr(solver, "schedule"):
        solver.schedule = tvl1_torch.Schedule.for_device(torch.device("cuda"))
        solver.block = GraphedFunction(solver._block, torch.device("cpu"))
    else:
        solver.check_every = 10
    return solver


def solver_module(path: str | None) -> ModuleType:
    """This branch's tvl1_torch, or the tvl1_torch.py at `path` (an older version)."""
    if path is None:
        return tvl1_torch
    spec = importlib.util.spec_from_file_location("tvl1_torch_at_" + Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_counts(pairs: list[tuple[np.ndarray, np.ndarray]], batches: list[int],
                  module: ModuleType) -> list[dict[str, float]]:
    """count_solve of one batch of each size (pairs repeated to fill it) on CUDA's schedule, and
    of the first pair alone on the CPU's own (the stage's default there), on the CPU."""
    rows = []
    for b in [*batches, "cpu"]:
        solver = module.Solver({}, "cpu", False)
        batch = pairs[:1] if b == "cpu" else repeated(pairs, b)
        counts = count_solve(solver if b == "cpu" else with_cuda_schedule(solver), *stacked(batch))
        rows.append({"batch": b, **counts})
        print(rows[-1], flush=True)
    return rows


def busy_share(solve: PairSolver, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """The share of a batch's wall time in which the GPU ran kernels or copies (the union of
    their intervals in torch.profiler's trace), or None where the trace holds none."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        began = time.perf_counter()
        solve(pairs)  # ends by fetching the flow: the device is done
        wall = time.perf_counter() - began
    return kernel_share(trace, wall)


def cuda_figures(pairs: list[tuple[np.ndarray, np.ndarray]], batches: list[int] = (64, 256, 512),
                 repeats: int = 3) -> dict:
    """tvl1_torch on the GPU, default parameters, for each batch size: pairs/s over `repeats`
    batches after a first one (its seconds: compilation where the compile cache is cold, graph
    captures), graphs captured, peak memory per pair (torch.cuda.max_memory_allocated in the
    timed batches over the batch), the share of wall time the solver thread waited for the
    GPU (a lower bound on its busy share) and the GPU's busy share on one more batch from
    torch.profiler; and the end-point difference of the first 2 pairs' flows against the CPU
    solver's (unfused)."""
    device = torch.device("cuda")
    figures: dict = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                     "compile cache": tvl1_torch.compile_cache(), "batches": {}}
    first_flows = None
    for b in batches:
        work = repeated(pairs, b * repeats)
        solve = PairSolver({}, device, True)
        began = time.perf_counter()
        flows = solve(work[:b])
        first_s = time.perf_counter() - began
        first_flows = first_flows or flows[:2]
        torch.cuda.reset_peak_memory_stats(device)
        solve.solve_s = solve.fetch_wait_s = solve.solver.waited_s = 0.0
        began = time.perf_counter()
        for k in range(0, len(work), b):
            solve(work[k:k + b])
        seconds = time.perf_counter() - began
        figures["batches"][b] = {
            "pairs/s": len(work) / seconds, "first batch s": first_s, "steady batch s": seconds / repeats,
            "graphs captured": solve.solver.block.captures,
            "memory per pair MiB": torch.cuda.max_memory_allocated(device) / b / 2 ** 20,
            "host wait share": solve.wait_s / seconds, "busy share (profiler)": busy_share(solve, work[:b])}
        print(b, figures["batches"][b], flush=True)
        del solve, flows
        gc.collect()
        torch.cuda.empty_cache()
    cpu = PairSolver({}, torch.device("cpu"), False)(pairs[:2])
    d = differences(first_flows, cpu)
    figures["epe vs cpu (2 pairs)"] = {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())}
    return figures


def differences(ours: list[np.ndarray], theirs: list[np.ndarray]) -> np.ndarray:
    """End-point differences of the clipped flows, every pixel of every pair."""
    return np.concatenate([np.linalg.norm(np.clip(a, -BOUND, BOUND) - np.clip(b, -BOUND, BOUND), axis=-1).ravel()
                           for a, b in zip(ours, theirs)])


def distribution(d: np.ndarray) -> str:
    cells = [f"{d.mean():.4f}", *(f"{np.percentile(d, q):.3f}" for q in PERCENTILES), f"{d.max():.2f}",
             f"{(d > 1).mean() * 100:.3f}"]
    return " | ".join(cells)


def textured(h: int, w: int) -> np.ndarray:
    """Band-limited random texture (as tests/test_flow.py's): gradients everywhere."""
    rng = np.random.default_rng(0)
    fine = cv2.GaussianBlur(rng.normal(size=(h, w)), (0, 0), 2.5)
    coarse = cv2.GaussianBlur(rng.normal(size=(h, w)), (0, 0), 10)
    return np.clip(128 + 40 * (fine / fine.std() + 2 * coarse / coarse.std()), 0, 255).astype(np.uint8)


def known_motion(device: torch.device, compile: bool) -> list[str]:
    h, w = SIDE, 341
    f0 = textured(h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    affine = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 1.5, 1.01)
    affine[:, 2] += (1.3, -0.7)
    motions = {"translation (2.3, -1.6) px": np.float64([[1, 0, 2.3], [0, 1, -1.6]]),
               "affine: 1.5 degrees, scale 1.01, shift (1.3, -0.7) px": affine}
    inside = (slice(16, h - 16), slice(16, w - 16))
    rows = []
    for name, M in motions.items():
        f1 = cv2.warpAffine(f0, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        truth = (points @ M.T - points[..., :2])[inside]  # frame 1 shows frame 0's point x at M x
        ours = torch_flows([(f0, f1)], device, compile, 1)[0][0][inside]
        theirs = opencv_flows([(f0, f1)])[0][0][inside]
        errors = [np.linalg.norm(f - truth, axis=-1) for f in (ours, theirs)]
        rows.append(f"| {name} | {errors[0].mean():.4f} | {errors[1].mean():.4f} | "
                    f"{np.percentile(errors[0], 99):.3f} | {np.percentile(errors[1], 99):.3f} |")
    return rows


def write_shard(clips: dict[str, list[np.ndarray]], path: Path) -> int:
    with ShardWriter(path, {**frames_attrs(SIDE, 90), "shard": path.stem}) as w:
        for key, frames in clips.items():
            w.add(key, {"frames": [encode_jpeg(f, 90) for f in frames]}, n_frames=len(frames), fps=25.0)
    return sum(len(f) - 1 for f in clips.values())


def end_to_end(frames: Path, method: str, threads: int, speed: dict | None = None) -> tuple[float, dict]:
    began = time.perf_counter()
    counts = compute_shard(frames, frames.with_name(f"{method}.h5"), method, threads=threads, speed=speed)
    return time.perf_counter() - began, counts


def end_to_end_rows(a: argparse.Namespace, clips: dict[str, list[np.ndarray]]) -> tuple[int, list[str]]:
    """compute_shard on a shard of the 341x256 clips' first --e2e-frames frames: tvl1_torch on
    --device (after a warm-up run), and on the CPU OpenCV's tvl1 beside it; the table's rows."""
    work = Path(tempfile.mkdtemp(prefix="bench_tvl1_torch_"))
    e2e_clips = {f"{q}#{r}": f[:a.e2e_frames] for q, f in clips.items() if f[0].shape[:2] == (SIDE, 341)
                 for r in range(a.e2e_repeat)}
    n_pairs = write_shard(e2e_clips, work / "frames.h5")
    speed = {"device": a.device, "batch": "auto", "compile": True}
    write_shard({q: f[:3] for q, f in list(e2e_clips.items())[:1]}, work / "warm.h5")
    compute_shard(work / "warm.h5", work / "warm_flow.h5", "tvl1_torch", threads=a.threads, speed=speed)  # compile
    rows = []
    for method, s in [("tvl1_torch", speed)] + ([("tvl1", None)] if a.device == "cpu" else []):
        seconds, counts = end_to_end(work / "frames.h5", method, a.threads, s)
        share = "-" if "solve_s" not in counts else f"{(counts['wait_s'] if a.device == 'cuda' else counts['solve_s']) / seconds:.2f}"
        rows.append(f"| {method} | {a.device if method == 'tvl1_torch' else 'cpu'} | {a.threads} | "
                    f"{counts['fields']} | {seconds:.1f} | {counts['fields'] / seconds:.2f} | {share} |")
        print(rows[-1], flush=True)
    return n_pairs, rows


def cpu_section(a: argparse.Namespace, clips: dict[str, list[np.ndarray]], pairs_by_clip: dict[str, list],
                square: list[tuple[np.ndarray, np.ndarray]], load_before: tuple[float, ...]) -> str:
    device = torch.device("cpu")
    pairs = [pair for ps in pairs_by_clip.values() for pair in ps]
    sizes = sorted({f"{g[0].shape[1]}x{g[0].shape[0]}" for g in pairs})

    # 1. agreement
    reference, _ = opencv_flows(pairs)
    fused, _ = torch_flows(pairs, device, True, 1)
    unfused, _ = torch_flows(pairs[:a.fixed_pairs], device, False, 1)
    fixed, _ = torch_flows(pairs[:a.fixed_pairs], device, True, 1, {"stopping": "fixed"})
    d_default, d_fixed = differences(fused, reference), differences(fixed, reference[:a.fixed_pairs])
    d_unfused = differences(unfused, fused[:a.fixed_pairs])
    starts = itertools.accumulate([0] + [len(v) for v in pairs_by_clip.values()])
    per_clip = [f"{differences(fused[k:k + len(v)], reference[k:k + len(v)]).mean():.3f}"
                for k, v in zip(starts, pairs_by_clip.values())]
    print("agreement", distribution(d_default), "fixed", distribution(d_fixed), flush=True)

    # 2. known motion
    motion_rows = known_motion(device, True)
    print("\n".join(motion_rows), flush=True)

    # 3. speed of the solver alone at 341x256, the same pairs for every solver
    square = square[:a.speed_pairs]
    cv_s = opencv_flows(square)[1]
    unfused_rate = 1 / torch_flows(square, device, False, 1)[1]
    speed_rows = [f"| OpenCV DualTVL1 | 1 | {1 / cv_s:.3f} |", f"| tvl1_torch unfused | 1 | {unfused_rate:.3f} |"]
    fused_rates = []
    for batch in a.batch:
        b = resolve_batch(batch if batch == "auto" else int(batch), device)
        seconds = torch_flows(repeated(square, 2 * b), device, True, b)[1]
        fused_rates.append(1 / seconds)
        speed_rows.append(f"| tvl1_torch fused | {b} | {1 / seconds:.3f} |")
        print(speed_rows[-1], flush=True)
    seconds = torch_flows(repeated(square, 2), device, True, 1, {"stopping": "fixed"})[1]
    speed_rows.append(f"| tvl1_torch fused, `stopping: fixed` | 1 | {1 / seconds:.3f} |")

    # 4. end to end on a shard of the 341x256 clips
    n_pairs, e2e_rows = end_to_end_rows(a, clips)
    load_after = os.getloadavg()

    body = f"""TV-L1 in torch (`tvl1_torch`, stresnet/tvl1_torch.py) against OpenCV {cv2.__version__}'s
DualTVL1 with the same (default) parameters; torch {torch.__version__}, device cpu.
1-minute load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (the benchmark alone
adds about 1-2; it ran holding the machine's lock for heavy work, no other benchmark beside it).

**Agreement** on the {len(pairs_by_clip)} real fixture clips at short side 256 (sizes {', '.join(sizes)}):
frames 0 ... {a.frames - 1} of each, {len(pairs)} pairs, {d_default.size:,} pixels. End-point difference of
the flow clipped to +-20 px (what the stage stores) between tvl1_torch and OpenCV, in px:

| run | mean | p50 | p90 | p99 | p99.9 | max | % over 1 px |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| `stopping: per_pair` (default: OpenCV's test per pair), {len(pairs)} pairs | {distribution(d_default)} |
| `stopping: fixed` (every iteration), first {a.fixed_pairs} pairs | {distribution(d_fixed)} |
| fused (torch.compile) against unfused, first {a.fixed_pairs} pairs | {distribution(d_unfused)} |

Mean per clip ({', '.join(Path(q).parent.name for q in pairs_by_clip)}): {', '.join(per_clip)}.

**Known motion** (341x256 textured image, error against the true field 16 px from the borders, px):

| motion | tvl1_torch mean | OpenCV mean | tvl1_torch p99 | OpenCV p99 |
| --- | ---: | ---: | ---: | ---: |
{chr(10).join(motion_rows)}

**Speed of the solver** on {len(square)} of the 341x256 pairs (repeated to fill a batch twice),
frames in memory, after a warm-up (torch.compile compiles on the first call); OpenCV and torch
on one thread each:

| solver | batch | pairs/s |
| --- | ---: | ---: |
{chr(10).join(speed_rows)}

**End to end** (`compute_shard`: frames read from a shard, flow computed, quantised, JPEG encoded,
shard written), the first {a.e2e_frames} frames of the 341x256 clips, {a.e2e_repeat} cop{"y" if a.e2e_repeat == 1 else "ies"} of each ({n_pairs} pairs),
after a warm-up run in the same process; solver share: the solver's time over the wall time (the
rest: reading, decoding, encoding and writing that the solver did not overlap). On the CPU the
solver's operations use the job's threads:

| method | device | threads | pairs | seconds | pairs/s | solver share |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(e2e_rows)}

What differs from OpenCV, and why:
- OpenCV ends a warping's iterations once the sum of squared updates of the flow is at most
  epsilon^2 x pixels; it sums in float32, pixel after pixel, tvl1_torch in float64. Where the sum
  lies within that rounding of the threshold the two stop one iteration apart, and the pair's
  flow moves a little from there on: the few large differences above (p99.9, max). With every
  iteration run on both sides (epsilon 1e-9) only float rounding differs: 0.0007 px mean at
  85x64 (tests/test_tvl1_torch.py).
- `stopping: fixed` (every inner and outer iteration, no test, as a GPU version without
  per-pair stopping would run) is further from OpenCV (the table's second row) and far slower:
  OpenCV's test ends most warpings after a few dozen of their up to 300 iterations. The
  default is therefore OpenCV's test, per pair.
- torch.compile fuses the inner iteration and the linearisation: the same flow on
  the CPU (third row), {fused_rates[0]:.2f} against {unfused_rate:.2f} pairs/s unfused on one thread; the first
  call compiles for about a minute on 2 cores. Its CPU kernels hold the GIL, so the stage runs one
  solver thread whose operations use the job's threads. The median filter stays unfused on the
  CPU (its compiled form measured slower); on CUDA it is compiled too.
- What the CUDA path launches and how often it waits is counted on the CPU in "TV-L1 in torch:
  launches and waits"; `--device cuda` measures it on a GPU (section "TV-L1 in torch (cuda)").
"""
    return body


def count_section(a: argparse.Namespace, square: list[tuple[np.ndarray, np.ndarray]],
                  load_before: tuple[float, ...]) -> str:
    runs = {"this branch": launch_counts(square, a.count_batches, solver_module(None))}
    if a.count_before:
        runs = {"before": launch_counts(square, a.count_batches, solver_module(a.count_before)), **runs}
    return count_report(runs, len(square), a.frames, load_before, os.getloadavg())


def count_report(runs: dict[str, list[dict]], n_pairs: int, frames: int, load_before: tuple[float, ...],
                 load_after: tuple[float, ...]) -> str:
    """The section of launch_counts' figures (`runs`: solver name -> its counts)."""
    rows, per_pair = [], {}
    for name, counts in runs.items():
        for c in counts:
            label, b = (f"{name}, CPU schedule", 1) if c["batch"] == "cpu" else (name, c["batch"])
            launches = c["graph launches"] + c["compiled calls"] + c["eager ops"]
            per_pair[label, b] = launches / b
            rows.append(f"| {label} | {b} | {c['graph launches'] / b:.1f} | {c['compiled calls'] / b:.1f} | "
                        f"{c['eager ops'] / b:.1f} | {launches / b:.1f} | {c['eager views'] / b:.1f} | "
                        f"{c['host syncs'] / b:.2f} | {c['host syncs']:,} | {c['iterations']:,} | "
                        f"{c['pixel-iterations needed'] / c['pixel-iterations computed']:.2f} |")
    largest = max(c["batch"] for c in runs["this branch"] if c["batch"] != "cpu")
    ratio = (f" At batch {largest} a pair costs {per_pair['before', largest] / per_pair['this branch', largest]:.0f} "
             "times fewer launches than before." if ("before", largest) in per_pair else "")
    return f"""What a batch of tvl1_torch asks of a GPU, counted on the CPU (benchmarks/tvl1_launches.py):
the solver unfused on CUDA's schedule (the stopping test read every 10 iterations; this branch
also pads batches to powers of two and runs each block of 10 iterations through
GraphedFunction's static buffers, without graphs), default parameters (5 levels x 5 warpings x 10 x 30 iterations), one batch of
each size of the {n_pairs} real 341x256 fixture pairs (frames 0 ... {frames - 1} of each clip, repeated to fill
the batch). "before": the tvl1_torch.py given by --count-before (main's, with its own CUDA
setting, `check_every` 10). "CPU schedule": the first pair alone, as the stage runs it on the CPU
(the stopping test read after every iteration, no padding, no graphs; the median filter, which
counts as a compiled call here, runs unfused on the CPU, before and after). Per pair: graph
launches (a block of iterations: one CUDA graph), calls of compiled functions outside graphs,
eager aten ops outside both (views apart: they launch no kernel), all launches (their sum),
views, host synchronisations (reads of a value: item, bool, int; nonzero, masked_select,
boolean-mask indexing); per batch: host synchronisations and iterations run (by the rows still
iterating); and the share of the pixel-iterations computed that a pair needed (it had not
stopped; the rest is masked or padding). torch {torch.__version__}; counts, not timings: the
machine's load does not change them (1-minute load average {load_before[0]:.2f} before, {load_after[0]:.2f} after,
other jobs running).

| solver | batch | graph launches / pair | compiled calls / pair | eager ops / pair | launches / pair | views / pair | host syncs / pair | host syncs / batch | iterations / batch | needed / computed |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Every batch here holds a pair that never passes the stopping test (it runs all 300 iterations of
every warping), so every batch runs all 7,500 iterations: the host now reads the test once per
block of 10, 750 reads per batch whatever its size, where before it read it as often and also
indexed by boolean masks whenever pairs stopped, more often the more pairs.{ratio} The
price of masking is compute: pairs that stopped stay in the rows iterated until at most half of
them go on, and batches are padded to powers of two; the last column is the useful share of
what a GPU computes (masking alone, without narrowing the rows, would compute every row of the
batch for as long as its slowest pair iterates). On the CPU's own schedule the change removes
eager ops (the stopping test is counted inside the compiled iteration) and adds none.
"""


def cuda_section(a: argparse.Namespace, clips: dict[str, list[np.ndarray]],
                 square: list[tuple[np.ndarray, np.ndarray]], load_before: tuple[float, ...]) -> str:
    figures = cuda_figures(square, a.cuda_batches)
    n_pairs, e2e_rows = end_to_end_rows(a, clips)
    load_after = os.getloadavg()
    rows = [f"| {b} | {f['pairs/s']:.1f} | {f['first batch s']:.1f} | {f['steady batch s']:.2f} | {f['graphs captured']} | "
            f"{f['memory per pair MiB']:.1f} | {f['host wait share']:.2f} | "
            f"{'-' if f['busy share (profiler)'] is None else format(f['busy share (profiler)'], '.2f')} |"
            for b, f in figures["batches"].items()]
    epe = figures["epe vs cpu (2 pairs)"]
    return f"""tvl1_torch on {figures['device']}, torch {torch.__version__}, default parameters, on the
{len(square)} real 341x256 fixture pairs repeated (frames in memory); compile cache
`{figures['compile cache']}`. 1-minute load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.
First batch: compilation (where the cache is cold; only for the first batch size) and graph
captures; then 3 batches timed. Memory: torch.cuda.max_memory_allocated over the timed batches,
per pair. Host wait share: the seconds the solver thread waited for the GPU over the wall time, a
lower bound on the GPU's busy share; busy share: the union of the kernels' and copies' intervals
in torch.profiler's trace of one more batch over its wall time.

| batch | pairs/s | first batch s | batch s | graphs captured | MiB / pair | host wait share | busy share |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Flow of the first 2 pairs against the CPU solver's (unfused): end-point difference mean
{epe['mean']:.5f} px, p99 {epe['p99']:.4f}, max {epe['max']:.3f}.

**End to end** (`compute_shard` on the GPU), the first {a.e2e_frames} frames of the 341x256 clips,
{a.e2e_repeat} copies of each ({n_pairs} pairs), after a warm-up run; wait share as above, of the
whole run:

| method | device | threads | pairs | seconds | pairs/s | host wait share |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(e2e_rows)}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/videos"))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--frames", type=int, default=3, help="frames per clip for the agreement (pairs = frames - 1)")
    p.add_argument("--fixed-pairs", type=int, default=4, help="pairs run with a fixed iteration count")
    p.add_argument("--speed-pairs", type=int, default=12, help="341x256 pairs of the solver speed runs")
    p.add_argument("--batch", nargs="+", default=["auto"], help="batch sizes of the speed runs (auto: the stage's)")
    p.add_argument("--e2e-frames", type=int, default=9, help="frames per 341x256 clip in the end-to-end run")
    p.add_argument("--e2e-repeat", type=int, default=1, help="copies of each clip in the end-to-end shard")
    p.add_argument("--threads", type=int, default=2, help="threads of the end-to-end runs")
    p.add_argument("--count", action="store_true", help="count launches and host synchronisations (CPU)")
    p.add_argument("--count-batches", type=int, nargs="+", default=[4, 16, 64], help="batch sizes of --count")
    p.add_argument("--count-before", help="an older tvl1_torch.py to count beside this branch's")
    p.add_argument("--cuda-batches", type=int, nargs="+", default=[64, 256, 512], help="batch sizes on CUDA")
    p.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    clips = clip_frames(Path(a.videos), max(a.frames, a.e2e_frames))
    pairs_by_clip = {q: list(zip(g, g[1:])) for q, f in clips.items() for g in [grey(f[:a.frames])]}
    square = [pair for ps in pairs_by_clip.values() for pair in ps if pair[0].shape == (SIDE, 341)]
    if a.count:
        title, body = "TV-L1 in torch: launches and waits", count_section(a, square, load_before)
    elif a.device == "cuda":
        title, body = "TV-L1 in torch (cuda)", cuda_section(a, clips, square, load_before)
    else:
        title, body = "TV-L1 in torch (cpu)", cpu_section(a, clips, pairs_by_clip, square, load_before)
    print(body)
    if not a.no_write:
        write_section(title, body)


if __name__ == "__main__":
    main()
