"""TV-L1 in torch (method tvl1_torch) on the CPU, on small images: OpenCV's operations one by one,
known motion, agreement with OpenCV's TV-L1, batches of mixed sizes, CUDA's schedule (its host
synchronisations counted, its graphs' static buffers), and the flow stage."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from test_flow import ARCHERY, STEP, real_frames, texture, write_frames
from stresnet.cuda_graphs import GraphedFunction
from stresnet.errors import SettingError
from stresnet.flow import compute_shard
from stresnet.flow_reader import FlowReader
from stresnet.flow_torch import PairSolver
from stresnet.tvl1_torch import (Schedule, Solver, centered_gradient, compile_cache, median_blur, median_network,
                                 pyramid_sizes, remap_cubic, resize_linear)

CPU = torch.device("cpu")


def grey(clip, side, n):
    return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in real_frames(clip, side, n)]


def opencv_tvl1(pairs, **params):
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    for key, value in params.items():
        getattr(algo, "set" + "".join(p.capitalize() for p in key.split("_")))(value)
    return [algo.calc(a, b, None) for a, b in pairs]


def epe(a, b):
    return np.linalg.norm(np.clip(a, -20, 20) - np.clip(b, -20, 20), axis=-1)


def test_opencv_operations_are_reproduced():
    """resize (pyramid and zoom), remap INTER_CUBIC with its zero border, medianBlur: to float
    rounding (1e-4 of values up to 255), the median exactly (with ties too)."""
    rng = np.random.default_rng(0)
    img = (rng.random((41, 57)) * 255).astype(np.float32)
    level, t = img, torch.from_numpy(img)[None]
    for size in pyramid_sizes(41, 57, 5, 0.8)[1:]:
        level = cv2.resize(level, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        t = resize_linear(t, size, (0.8, 0.8))
        assert level.shape == size and np.abs(level - t[0].numpy()).max() < 1e-4
    assert pyramid_sizes(41, 57, 5, 0.8)[-1] == (17, 24) and len(pyramid_sizes(20, 57, 5, 0.8)) == 2  # stops under 16 px
    zoom = cv2.resize(level, (30, 21), interpolation=cv2.INTER_LINEAR)  # the zoom of the flow: to the level above
    assert np.abs(zoom - resize_linear(torch.from_numpy(level)[None], (21, 30), (21 / 17, 30 / 24))[0].numpy()).max() < 1e-4

    flow = (rng.normal(size=(2, 41, 57)) * 3).astype(np.float32)
    flow[:, :6, :6] += 9  # some positions far outside the image
    ys, xs = np.mgrid[0:41, 0:57].astype(np.float32)
    warped = cv2.remap(img, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC)
    ours = remap_cubic(torch.from_numpy(img)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    assert np.abs(warped - ours).max() < 1e-3

    gx, gy = centered_gradient(torch.from_numpy(img)[None])
    assert gx[0, 5, 0] == 0.5 * (img[5, 1] - img[5, 0]) and gy[0, 40, 7] == 0.5 * (img[40, 7] - img[39, 7])
    assert gx[0, 5, 9] == 0.5 * (img[5, 10] - img[5, 8])

    u = np.round(rng.normal(size=(2, 2, 23, 31)) * 2).astype(np.float32) / 2  # many ties
    for size in (3, 5):
        ours = median_blur(torch.from_numpy(u), size).numpy()
        np.testing.assert_array_equal(ours, [[cv2.medianBlur(c, size) for c in pair] for pair in u])


def test_median_network_selects_the_median_of_every_input():
    """0-1 principle: a comparator network selects the median of all inputs iff it does for all
    2^n inputs of zeros and ones; checked for 9 and 25 values, bit-parallel."""
    for n in (9, 25):
        ops, median = median_network(n)
        n_bytes = 2 ** n // 8  # input c is bit c of these bytes, first bit most significant (packbits)

        def input_bits(k):  # input k's value in every input: bit k of c
            if k < 3:
                return np.full(n_bytes, sum(((i >> k) & 1) << (7 - i) for i in range(8)), np.uint8)
            return np.tile(np.repeat(np.uint8([0, 255]), 2 ** (k - 3)), 2 ** (n - k - 1))

        values = {k: input_bits(k) for k in range(n)}
        for a, b, lo, hi in ops:
            if lo >= 0:
                values[lo] = values[a] & values[b]
            if hi >= 0:
                values[hi] = values[a] | values[b]
        half = n // 2  # ones in c = ones in its high bits + ones in its low bits
        low, high = (np.uint8([bin(i).count("1") for i in range(2 ** m)]) for m in (half, n - half))
        ones = (high[:, None] + low[None, :]).ravel()
        np.testing.assert_array_equal(values[median], np.packbits(ones > n // 2))
    assert len(median_network(25)[0]) == 114  # OpenCV's hand-made network has 99


def test_known_translation_and_affine_motion_are_recovered_as_well_as_opencv():
    """A textured image shifted by (1.3, -0.7) px, and turned by 2 degrees about its centre:
    12 px from the borders TV-L1's error is a few hundredths of a pixel (measured: torch and
    OpenCV within 0.001 px of each other)."""
    h, w = 64, 80
    f0 = cv2.cvtColor(texture(h, w, seed=1), cv2.COLOR_RGB2GRAY)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    shift = np.float64([[1, 0, 1.3], [0, 1, -0.7]])
    turn = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 2.0, 1.0)
    inside = (slice(12, h - 12), slice(12, w - 12))
    for M in (shift, turn):
        f1 = cv2.warpAffine(f0, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        truth = (points @ M.T - points[..., :2])[inside]  # frame 1 holds frame 0's point x at M x
        ours = PairSolver({}, CPU, False)([(f0, f1)])[0][inside]
        theirs = opencv_tvl1([(f0, f1)])[0][inside]
        error, opencv_error = np.linalg.norm(ours - truth, axis=-1).mean(), np.linalg.norm(theirs - truth, axis=-1).mean()
        assert error < 0.06 and error <= opencv_error + 0.002, (error, opencv_error)


def test_agrees_with_opencv_on_real_frames():
    """Archery at short side 64 (85 x 64). With OpenCV's stopping test the two stop a warping's
    iterations at the same step except where the sum of squared updates is within rounding of
    the threshold (OpenCV sums it in float32, pixel after pixel): mean difference measured
    0.020 px, 99th percentile 0.16. With every iteration run (epsilon 1e-9; 3 levels and 2
    warpings keep the test short) only float rounding differs, amplified by the iterations:
    measured 0.0007 px mean, 0.013 px at most."""
    frames = grey(ARCHERY, 64, 2)
    pair = [(frames[0], frames[1])]
    diff = epe(PairSolver({}, CPU, False)(pair)[0], opencv_tvl1(pair)[0])
    assert diff.mean() < 0.025 and np.percentile(diff, 99) < 0.2
    every = {"epsilon": 1e-9, "warpings_number": 2, "scales_number": 3}
    diff = epe(PairSolver({**every, "stopping": "fixed"}, CPU, False)(pair)[0], opencv_tvl1(pair, **every)[0])
    assert diff.mean() < 0.001 and diff.max() < 0.03


def test_a_batch_of_mixed_sizes_gives_each_pair_its_own_flow():
    """Two videos of different sizes, pairs interleaved in one batch: the same flow, bit for bit,
    as each pair solved alone; and with CUDA's schedule (the stopping test read every 10
    iterations, pairs that stopped masked, the batch padded to a power of two and narrowed to
    the pairs going on) too, through the static buffers of CUDA graphs, batch after batch."""
    a, b = grey(ARCHERY, 48, 3), grey("mmaction2/part_0.mp4", 40, 2)
    assert a[0].shape != b[0].shape
    pairs = [(a[0], a[1]), (b[0], b[1]), (a[1], a[2])]
    solve = PairSolver({}, CPU, False)
    together = solve(pairs)
    for pair, flow in zip(pairs, together):
        np.testing.assert_array_equal(flow, solve([pair])[0])
    solve.solver.schedule = Schedule(10, True)
    for flow, expected in zip(solve(pairs), together):
        np.testing.assert_array_equal(flow, expected)
    solve.solver.block = GraphedFunction(solve.solver._block, CPU)  # CUDA's static buffers, without graphs
    for flow, expected in zip(solve(pairs) + solve(pairs[::-1]), together + together[::-1]):
        np.testing.assert_array_equal(flow, expected)


def test_a_pair_that_stopped_is_left_as_it_is_while_the_others_go_on():
    """Textured 48x40 frames shifted by (3, -4) px (twice), by (1, 2) px, and with a 6x4 patch
    inverted; epsilon 0.05, 2 levels x 2 warpings x 3 outer x 12 inner iterations. Alone, in its
    first warping the shifted-by-(3, -4) pair runs every iteration (36), the (1, 2) one stops in
    its second outer iteration, the patched one in its first. Together on CUDA's schedule (3 of
    4 rows still going: none left out), each gets the flow it has alone, bit for bit: once a
    pair stops, its u, p and median filter stay as they are through the others' outer
    iterations."""
    still = cv2.cvtColor(texture(40, 48, seed=3), cv2.COLOR_RGB2GRAY)
    patched = still.copy()
    patched[18:22, 20:26] = 255 - patched[18:22, 20:26]
    far = np.roll(still, (3, -4), axis=(0, 1))
    nexts = [far, far, np.roll(still, (1, 2), axis=(0, 1)), patched]
    params = {"scales_number": 2, "warpings_number": 2, "outer_iterations": 3, "inner_iterations": 12,
              "epsilon": 0.05}
    alone, first_warping = [], []
    for frame in nexts:
        solver, steps = Solver(params), []
        step, linearise = solver.step, solver.linearise
        solver.step = lambda *args: steps.append(1) or step(*args)  # noqa: B023 - called within the iteration
        solver.linearise = lambda *args: steps.append(0) or linearise(*args)  # noqa: B023
        alone.append(solver(torch.from_numpy(still)[None], torch.from_numpy(frame)[None])[0])
        first_warping.append(steps.index(0, 1) - 1)
    assert first_warping[0] == 36 and 12 < first_warping[2] <= 24 and first_warping[3] <= 10
    solver = Solver(params)
    solver.schedule = Schedule(10, True)
    together = solver(torch.from_numpy(np.stack([still] * 4)), torch.from_numpy(np.stack(nexts)))
    for flow, expected in zip(together, alone):
        assert torch.equal(flow, expected)


def test_fixed_stopping_runs_every_iteration():
    frames = grey(ARCHERY, 32, 2)
    params = {"scales_number": 2, "warpings_number": 2, "outer_iterations": 3, "inner_iterations": 4}
    for stopping, expected in (("fixed", 2 * 2 * 3 * 4), ("per_pair", None)):
        solver, calls = Solver({**params, "stopping": stopping}), []
        step = solver.step
        solver.step = lambda *args: calls.append(1) or step(*args)
        solver(torch.from_numpy(frames[0])[None], torch.from_numpy(frames[1])[None])
        assert len(calls) == expected if expected else 0 < len(calls) <= 48


class HostSyncs(TorchDispatchMode):
    """Counts the operations that make the host wait for the device: reading a value
    (`.item()`, `int()`, `bool()`: aten._local_scalar_dense, or item and is_nonzero under
    inference mode) and shapes that depend on values (nonzero, masked_select, indexing by a
    boolean mask, which calls nonzero inside)."""
    READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default,
             torch.ops.aten.is_nonzero.default, torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        mask_index = func is torch.ops.aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        self.count += mask_index or func in self.READS
        return func(*args, **(kwargs or {}))


def test_the_host_waits_once_per_block_of_iterations():
    """2 levels x 2 warpings x 3 outer x 12 inner iterations. A moving pair that never passes the
    stopping test (epsilon 1e-9) and a still pair (identical frames: the first update is 0, so it
    stops at its first iteration of each warping). CUDA's schedule reads the test after blocks of
    10 and 2 iterations: 2 x 2 x 3 x 2 = 24 reads for the moving pair, alone or with the still one
    (which leaves the rows iterated without a read of its own), 2 x 2 x 1 = 4 for the still pair
    alone; the CPU's schedule reads it after every iteration: 2 x 2 x 3 x 12 = 144, and 4."""
    still = cv2.cvtColor(texture(40, 48, seed=3), cv2.COLOR_RGB2GRAY)
    moved = np.roll(still, (1, 2), axis=(0, 1))
    params = {"scales_number": 2, "warpings_number": 2, "outer_iterations": 3, "inner_iterations": 12,
              "epsilon": 1e-9}
    assert len(pyramid_sizes(40, 48, 2, 0.8)) == 2
    cases = [(Schedule(10, True), [moved], 24), (Schedule(10, True), [still], 4),
             (Schedule(10, True), [moved, still], 24), (Schedule(1, False), [moved], 144),
             (Schedule(1, False), [still], 4)]
    flows = []
    for schedule, nexts, expected in cases:
        solver = Solver(params)
        solver.schedule = schedule
        with HostSyncs() as syncs:
            flow = solver(torch.from_numpy(np.stack([still] * len(nexts))), torch.from_numpy(np.stack(nexts)))
        assert syncs.count == expected, (schedule, len(nexts), syncs.count)
        flows.append(flow)
    moving, _, both, moving_cpu, still_cpu = flows
    assert torch.equal(both[0], moving[0]) and torch.equal(moving, moving_cpu) and moving.abs().mean() > 0.5
    assert not both[1].any() and not still_cpu.any()


def test_compile_caches_go_to_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache() == str(tmp_path / "stresnet" / "torchinductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "stresnet" / "torchinductor")  # torch reads it
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache() == str(tmp_path / "mine")


def test_flow_stage_writes_a_shard_the_reader_reads(tmp_path):
    clips = {ARCHERY: real_frames(ARCHERY, 48, 5), "mm.mp4": real_frames("mmaction2/part_0.mp4", 40, 3),
             "one.avi": real_frames(ARCHERY, 48, 1)}
    write_frames(tmp_path / "f.h5", clips, short_side=48)
    counts = compute_shard(tmp_path / "f.h5", tmp_path / "a.h5", "tvl1_torch", {"warpings_number": 4}, threads=2,
                           speed={"batch": 3, "compile": False, "device": "cpu"})
    assert counts["videos"] == 3 and counts["fields"] == 6 and counts["device"] == "cpu" and counts["solve_s"] > 0 and counts["wait_s"] == 0
    reader = FlowReader(tmp_path / "a.h5", expect={"method": "tvl1_torch", "bound": 20})
    attrs = reader.attrs
    assert attrs["params"]["warpings_number"] == 4 and attrs["params"]["stopping"] == "per_pair"
    assert "batch" not in attrs["params"] and attrs["device"] == "cpu" and attrs["versions"]["torch"] == torch.__version__
    assert [reader.n_fields(k) for k in clips] == [4, 2, 0]
    raw = PairSolver(attrs["params"], CPU, False)(list(zip(g := grey(ARCHERY, 48, 5), g[1:])))
    for i, flow in enumerate(raw):  # the stored frames are JPEGs of these: some rounding apart
        stored = np.moveaxis(reader.field(ARCHERY, i, as_float=True), 0, -1)
        assert np.abs(stored - np.clip(flow, -20, 20)).mean() < 2 * STEP
    compute_shard(tmp_path / "f.h5", tmp_path / "b.h5", "tvl1_torch", {"warpings_number": 4}, threads=1,
                  speed={"batch": 1, "compile": False})
    other = FlowReader(tmp_path / "b.h5")
    for key, i, c in ((k, i, c) for k in clips for i in range(reader.n_fields(k)) for c in "uv"):
        assert bytes(reader.shard.encoded(key, i, c)) == bytes(other.shard.encoded(key, i, c))


def test_bad_settings_are_one_line_errors(tmp_path):
    write_frames(tmp_path / "f.h5", {ARCHERY: real_frames(ARCHERY, 32, 2)}, short_side=32)
    cases = [({"warps": 3}, {}, "unknown tvl1_torch parameter(s): warps"),
             ({"median_filtering": 7}, {}, "median_filtering must be 1 (off), 3 or 5"),
             ({"stopping": "never"}, {}, "stopping must be one of per_pair, fixed"),
             ({}, {"batch": 0}, "batch must be auto or a positive integer"),
             ({}, {"gpus": 1}, "unknown tvl1_torch speed setting(s): gpus")]
    if not torch.cuda.is_available():
        cases.append(({}, {"device": "cuda"}, "torch sees no CUDA device"))
    for params, speed, message in cases:
        with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compute_shard(tmp_path / "f.h5", tmp_path / "x.h5", "tvl1_torch", params, speed=speed)
    with pytest.raises(SettingError, match="unknown tvl1 speed setting"):
        compute_shard(tmp_path / "f.h5", tmp_path / "x.h5", "tvl1", speed={"batch": 2})
    result = subprocess.run([sys.executable, "-m", "stresnet", "flow", "--frames", str(tmp_path / "f.h5"), "--out",
                             str(tmp_path / "x.h5"), "--method", "tvl1_torch", "--speed", '{"batch": -1}'],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "batch must be auto" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_compiled_solver_gives_the_unfused_flow():
    """torch.compile fuses the iteration (about a minute of compilation on 2 cores); measured
    bit-identical on the CPU."""
    frames = grey(ARCHERY, 48, 3)
    pairs = list(zip(frames, frames[1:]))
    eager = PairSolver({}, CPU, False)(pairs)
    for a, b in zip(eager, PairSolver({}, CPU, True)(pairs)):
        assert np.abs(a - b).max() < 1e-4
