"""TV-L1 optical flow in torch, batched over frame pairs: OpenCV's DualTVL1OpticalFlow
(opencv_contrib, optflow/src/tvl1flow.cpp) step for step. It follows Zach, Pock and Bischof (2007)
in the form of Sanchez, Meinhardt-Llopis and Facciolo (IPOL 2013), with Wedel et al.'s (2009)
median filter.

OpenCV's details kept: a pyramid of bilinear `resize` (no blur) of each level from the one above,
sizes rounded, stopped under 16 px; the coarse flow zoomed by bilinear `resize` and multiplied by
1 / scale_step; central differences of I1 (halved one-sided ones on the borders); the warp by
`remap` INTER_CUBIC (Keys, a = -0.75; zero outside the image); the 5x5 median of the flow
(edges replicated, exact) before each outer iteration; the backward-difference divergence and
forward gradient of the dual step with OpenCV's border rows; the thresholding step with its
3 cases and the zero-gradient case; the dual field reset at each level, not at each warping.

Pairs of one size are solved as a batch (B, H, W). OpenCV stops a warping's iterations once
the sum of squared updates of u is at most epsilon^2 x pixels; `stopping: per_pair` applies that
test to each pair: a pair that passes it keeps the values it had (a mask, on the device), the
others go on, so each pair takes OpenCV's path. `stopping: fixed` runs every iteration, as a GPU
implementation without the test would. The host reads how many pairs go on once per block of
iterations (Schedule); on CUDA a block is one CUDA graph (stresnet.cuda_graphs).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .compiled import Fused, compile_cache
from .cuda_graphs import GraphedFunction

log = logging.getLogger(__name__)
DEFAULTS: dict[str, Any] = {"tau": 0.25, "lambda": 0.15, "theta": 0.3, "scales_number": 5,
                            "warpings_number": 5, "epsilon": 0.01, "inner_iterations": 30,
                            "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0,
                            "median_filtering": 5, "stopping": "per_pair"}
STOPPING = ("per_pair", "fixed")
MIN_SIDE = 16  # OpenCV stops the pyramid at the first level with a side under 16 px
FLT_EPSILON = float(np.finfo(np.float32).eps)


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters with defaults filled in; a one-line ValueError for a bad one."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown tvl1_torch parameter(s): {', '.join(sorted(unknown))}")
    p = {**DEFAULTS, **params}
    for key in ("tau", "lambda", "theta", "epsilon"):
        if not p[key] > 0:
            raise ValueError(f"tvl1_torch {key} must be positive, not {p[key]}")
    for key in ("scales_number", "warpings_number", "inner_iterations", "outer_iterations"):
        if int(p[key]) != p[key] or p[key] < 1:
            raise ValueError(f"tvl1_torch {key} must be a positive integer, not {p[key]}")
    if not 0 < p["scale_step"] < 1:
        raise ValueError(f"tvl1_torch scale_step must be in (0, 1), not {p['scale_step']}")
    if p["gamma"] < 0:
        raise ValueError(f"tvl1_torch gamma must be at least 0, not {p['gamma']}")
    if p["median_filtering"] not in (1, 3, 5):  # OpenCV's medianBlur takes 3 and 5 on floats
        raise ValueError(f"tvl1_torch median_filtering must be 1 (off), 3 or 5, not {p['median_filtering']}")
    if p["stopping"] not in STOPPING:
        raise ValueError(f"tvl1_torch stopping must be one of {', '.join(STOPPING)}, not {p['stopping']!r}")
    return p


# ---- OpenCV's image operations -------------------------------------------------------------

def pyramid_sizes(h: int, w: int, scales: int, step: float) -> list[tuple[int, int]]:
    """(H, W) of each level: resize(fx = fy = step) of the level above, stopped under 16 px."""
    sizes = [(h, w)]
    while len(sizes) < scales:
        ph, pw = sizes[-1]
        nh, nw = int(np.rint(ph * step)), int(np.rint(pw * step))  # saturate_cast<int>: rounded
        if nh < MIN_SIDE or nw < MIN_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


@functools.lru_cache(maxsize=256)
def _linear_taps(n_in: int, n_out: int, inv_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """resize INTER_LINEAR along one axis, as OpenCV's: output d reads source s and s + 1 with
    weights 1 - f and f, where s + f = (d + 0.5) / inv_scale - 0.5 (in float), clamped to the
    edges. Returns the first taps (n_out,) and the weights (2, n_out)."""
    first = np.zeros(n_out, np.int64)
    weights = np.zeros((2, n_out), np.float32)
    for d in range(n_out):
        f = np.float32((d + 0.5) * (1.0 / inv_scale) - 0.5)
        s = int(np.floor(f))
        f = np.float32(f - s)
        if s < 0:
            s, f = 0, np.float32(0)
        if s >= n_in - 1:
            s, f = n_in - 1, np.float32(0)
        first[d], weights[:, d] = s, (np.float32(1) - f, f)
    return first, weights


def _resize_axis(x: torch.Tensor, dim: int, n_out: int, inv_scale: float) -> torch.Tensor:
    n_in = x.shape[dim]
    first, weights = _linear_taps(n_in, n_out, inv_scale)
    first = torch.from_numpy(first).to(x.device)
    shape = [1] * x.dim()
    shape[dim] = n_out
    w0, w1 = (torch.from_numpy(w).to(x.device).reshape(shape) for w in weights)
    second = (first + 1).clamp(max=n_in - 1)
    return x.index_select(dim, first) * w0 + x.index_select(dim, second) * w1


def resize_linear(x: torch.Tensor, size: tuple[int, int], inv_scale: tuple[float, float]) -> torch.Tensor:
    """cv::resize INTER_LINEAR of (..., H, W) to `size` with OpenCV's scale (fy, fx): the factor
    given (pyramid) or the ratio of the sizes (zoom of the flow); horizontal pass first, as OpenCV."""
    return _resize_axis(_resize_axis(x, -1, size[1], inv_scale[1]), -2, size[0], inv_scale[0])


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's centeredGradient of (B, H, W): (f(x+1) - f(x-1)) / 2, edges replicated (so half
    the one-sided difference on the borders)."""
    pad = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return 0.5 * (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]), 0.5 * (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1])


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys' cubic weights (a = -0.75) of the 4 taps at fraction t, as OpenCV's interpolateCubic."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


def remap_cubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """cv::remap INTER_CUBIC, BORDER_CONSTANT 0, of images (B, K, H, W) at x + u1, y + u2
    (flow (B, 2, H, W)): 4x4 taps, taps outside the image 0. The position is used as it is: the
    installed OpenCV 5 does not round it to 1/32 px (measured against cv2.remap)."""
    b, k, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]  # buildFlowMap
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = _cubic_weights(x - x0), _cubic_weights(y - y0)
    x0, y0 = x0.to(torch.int64) - 1, y0.to(torch.int64) - 1  # first of the 4 taps
    flat = images.reshape(b, k, h * w)
    out = torch.zeros_like(images)
    for i in range(4):
        yi = y0 + i
        y_in = (yi >= 0) & (yi < h)
        for j in range(4):
            xj = x0 + j
            inside = y_in & (xj >= 0) & (xj < w)
            index = (yi.clamp(0, h - 1) * w + xj.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, k, h * w)
            taps = flat.gather(2, index).reshape(b, k, h, w)
            out += torch.where(inside[:, None], taps, 0) * (wy[i] * wx[j])[:, None]
    return out


@functools.lru_cache(maxsize=4)
def median_network(n: int) -> tuple[tuple[tuple[int, int, int, int], ...], int]:
    """A comparator network that selects the median of n values: Batcher's odd-even merge sort
    of the next power of two (the padding inputs, half -inf and half +inf, resolved before),
    pruned to the comparators and outputs the middle wire depends on. Values are numbered: the
    inputs 0 ... n-1, then the min and max of each comparator (-1 where that output is unused).
    Returns the comparators (a, b, min, max) and the number of the median."""
    size = 1 << (n - 1).bit_length()
    low = (size - n) // 2
    wires = [-1] * low + list(range(n)) + [-2] * (size - n - low)  # -1: -inf, -2: +inf
    ops, fresh, p = [], n, 1
    while p < size:  # Batcher's odd-even merge sort
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) != (i + j + k) // (2 * p):
                        continue
                    a, b = wires[i + j], wires[i + j + k]
                    if a == -2 or b == -1:  # a padding input: the order is known
                        wires[i + j], wires[i + j + k] = b, a
                    elif a != -1 and b != -2:
                        ops.append((a, b, fresh, fresh + 1))
                        wires[i + j], wires[i + j + k] = fresh, fresh + 1
                        fresh += 2
            k //= 2
        p *= 2
    median = wires[low + n // 2]
    needed, kept = {median}, []
    for a, b, lo, hi in reversed(ops):  # keep what the median depends on
        if lo in needed or hi in needed:
            kept.append((a, b, lo if lo in needed else -1, hi if hi in needed else -1))
            needed |= {a, b}
    return tuple(reversed(kept)), median


def _with_last_uses(network: tuple[tuple[tuple[int, int, int, int], ...], int]) -> tuple[Any, int, list[list[int]]]:
    ops, median = network
    last = {v: k for k, op in enumerate(ops) for v in op[:2]}
    return ops, median, [[v for v in op[:2] if last[v] == k and v != median] for k, op in enumerate(ops)]


MEDIANS = {size: _with_last_uses(median_network(size * size)) for size in (3, 5)}  # size -> (comparators, median, frees)


def median_blur(u: torch.Tensor, size: int) -> torch.Tensor:
    """cv::medianBlur (size 3 or 5) of each map of (..., H, W), edges replicated; the exact
    median, by a comparator network of elementwise min and max (as OpenCV's)."""
    r = size // 2
    pad = F.pad(u, (r, r, r, r), mode="replicate")
    h, w = u.shape[-2:]
    values = {i * size + j: pad[..., i:i + h, j:j + w] for i in range(size) for j in range(size)}
    ops, median, last = MEDIANS[size]
    for k, (a, b, lo, hi) in enumerate(ops):
        if lo >= 0:
            values[lo] = torch.minimum(values[a], values[b])
        if hi >= 0:
            values[hi] = torch.maximum(values[a], values[b])
        for v in last[k]:  # free what no later comparator reads
            del values[v]
    return values[median]


# ---- the solver ----------------------------------------------------------------------------

def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """OpenCV's divergence of the dual field: backward differences, p taken as 0 before the first
    row and column."""
    return (px - F.pad(px, (1, 0))[..., :-1]) + (py - F.pad(py, (0, 0, 1, 0))[..., :-1, :])


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's forwardGradient: u(x+1) - u(x), 0 on the last column (x) and last row (y)."""
    return F.pad(u[..., 1:] - u[..., :-1], (0, 1)), F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))


def iteration(u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, g: torch.Tensor, rho_c: torch.Tensor,
              grad: torch.Tensor, active: torch.Tensor | None, lt: float, theta: float, taut: float,
              tolerance: float) -> tuple[torch.Tensor, ...]:
    """One inner iteration for a batch: u (B, C, H, W) with C = 2 (u1, u2) or 3 (with the
    illumination term u3), the dual fields px, py (B, C, H, W), g = (I1wx, I1wy[, gamma]).
    Pairs not `active` (a (B,) bool; None: all are) keep their u, px, py. Returns the new u,
    px, py, which pairs go on (active, and their sum of squared updates of u is above
    `tolerance`: OpenCV's stopping test) and how many (a 0-d tensor)."""
    # residual of the linearised data term: rho = I1w + grad I1w . (u - u0) - I0 (+ gamma u3)
    rho = rho_c + (g[:, 0] * u[:, 0] + g[:, 1] * u[:, 1])
    if u.shape[1] == 3:
        rho = rho + g[:, 2] * u[:, 2]
    # thresholding step TH: v = u + lambda theta grad I1 | -lambda theta grad I1 | -rho grad I1 / |grad I1|^2
    step = torch.where(rho < -lt * grad, lt, torch.where(
        rho > lt * grad, -lt, torch.where(grad > FLT_EPSILON, -rho / grad, 0.0)))
    v = u + step[:, None] * g
    # primal step: u = v + theta div p
    new = v + theta * divergence(px, py)
    # dual step: p = (p + tau/theta grad u) / (1 + tau/theta |grad u|)
    ux, uy = forward_gradient(new)
    norm = 1.0 + taut * torch.hypot(ux, uy)
    new_px, new_py = (px + taut * ux) / norm, (py + taut * uy) / norm
    # the stopping test: sum of squared updates of u
    going = torch.sum((new - u) ** 2, dim=(1, 2, 3), dtype=torch.float64) > tolerance
    if active is not None:
        keep = active[:, None, None, None]
        new, new_px, new_py = torch.where(keep, new, u), torch.where(keep, new_px, px), torch.where(keep, new_py, py)
        going = going & active
    return new, new_px, new_py, going, going.sum()


def masked_median(u: torch.Tensor, active: torch.Tensor | None, size: int) -> torch.Tensor:
    """Wedel et al.'s median filter of the flow (u1, u2; not u3) of the pairs `active` (None: all)."""
    flow = median_blur(u[:, :2], size)
    if u.shape[1] > 2:
        flow = torch.cat([flow, u[:, 2:]], 1)
    return flow if active is None else torch.where(active[:, None, None, None], flow, u)


def linearise(i0: torch.Tensor, i1: torch.Tensor, i1x: torch.Tensor, i1y: torch.Tensor, u: torch.Tensor,
              gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data term linearised at u0 = u: g = (I1wx, I1wy[, gamma]), the constant part of rho
    and |grad I1w|^2, from I1 and its gradient warped by the flow."""
    # warp I1 and its gradient: I1(x + u0), grad I1(x + u0)
    i1w, i1wx, i1wy = remap_cubic(torch.stack([i1, i1x, i1y], 1), u[:, :2]).unbind(1)
    grad = i1wx * i1wx + i1wy * i1wy  # |grad I1(x + u0)|^2
    rho_c = i1w - i1wx * u[:, 0] - i1wy * u[:, 1] - i0  # rho(u) = rho_c + grad I1(x + u0) . u
    g = [i1wx, i1wy] + ([torch.full_like(i1wx, gamma)] if u.shape[1] == 3 else [])
    return torch.stack(g, 1), rho_c, grad


@dataclasses.dataclass
class Schedule:
    """How a batch iterates. `check_every`: inner iterations between reads of the stopping test
    (each read waits for the device); `pow2`: batches padded to a power of two and, once at most
    half of a batch's pairs still iterate, these moved into the next power of two (a few shapes,
    so a few CUDA graphs, for any batch); else the rows iterated are exactly the pairs going on.
    On CUDA: every 10 iterations, powers of two, CUDA graphs; on the CPU: every iteration, exact."""

    check_every: int
    pow2: bool

    @classmethod
    def for_device(cls, device: torch.device) -> Schedule:
        return cls(10, True) if device.type == "cuda" else cls(1, False)


def next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


class Solver:
    """TV-L1 flow of batches of frame pairs of one size on one device. `compile` fuses the inner
    iteration and the linearisation (and, on CUDA, the median filter: on the CPU its compiled
    form measured slower than the unfused one) with torch.compile; on CUDA each block of
    `schedule.check_every` iterations is one CUDA graph. `waited_s`: the seconds spent reading
    the stopping test, i.e. waiting for the device."""

    def __init__(self, params: Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
                 compile: bool = False):
        self.p = check_params(dict(params or {}))
        self.device = torch.device(device)
        if compile:
            compile_cache()
        fuse = Fused if compile else (lambda f: f)
        self.step: Callable[..., Any] = fuse(iteration)
        self.linearise: Callable[..., Any] = fuse(linearise)
        self.median: Callable[..., Any] = fuse(masked_median) if self.device.type == "cuda" else masked_median
        self.schedule = Schedule.for_device(self.device)
        self.block: Callable[..., Any] = (GraphedFunction(self._block, self.device) if self.device.type == "cuda"
                                          else self._block)
        self.batch_rows: dict[tuple[int, int], int] = {}  # with pow2: rows of each frame size's batches so far
        self.waited_s = 0.0

    @torch.inference_mode()
    def __call__(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        """Flow (B, 2, H, W) from I0 to I1, grey images (B, H, W) in 0..255."""
        p = self.p
        n, h, w = i0.shape
        rows, first = n, n  # rows of the batch, rows iterated at first (the rest: padding)
        if self.schedule.pow2:  # the largest batch of this size so far: its graphs serve this one
            first = next_pow2(n)
            rows = self.batch_rows[h, w] = max(first, self.batch_rows.get((h, w), 1))
        i0, i1 = (F.pad(x.to(self.device, torch.float32), (0, 0, 0, 0, 0, rows - n)) if rows > n
                  else x.to(self.device, torch.float32) for x in (i0, i1))
        sizes = pyramid_sizes(h, w, p["scales_number"], p["scale_step"])
        pyramid = [(i0, i1)]
        for size in sizes[1:]:  # each level from the one above, as OpenCV
            pyramid.append(tuple(resize_linear(x, size, (p["scale_step"],) * 2) for x in pyramid[-1]))
        channels = 3 if p["gamma"] else 2
        u = torch.zeros((rows, channels, *sizes[-1]), device=self.device)
        for level in range(len(sizes) - 1, -1, -1):
            u = self._scale(*pyramid[level], u, n, first)
            if level:  # zoom to the next finer level; the flow (not u3) grows by 1 / scale_step
                (fh, fw), (ch, cw) = sizes[level - 1], sizes[level]
                u = resize_linear(u, (fh, fw), (fh / ch, fw / cw))
                u[:, :2] *= np.float32(1 / p["scale_step"])
        return u[:n, :2].clone()  # on CUDA u is a graph's buffer, which the next batch overwrites

    def _scale(self, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, n: int, first: int) -> torch.Tensor:
        """The warpings of one pyramid level (OpenCV's procOneScale)."""
        p = self.p
        h, w = i0.shape[-2:]
        i1x, i1y = centered_gradient(i1)
        px, py = torch.zeros_like(u), torch.zeros_like(u)  # the dual field restarts at each level
        for _ in range(p["warpings_number"]):
            u, px, py = self._iterate(u, px, py, *self.linearise(i0, i1, i1x, i1y, u, p["gamma"]), n, first, h * w)
        return u

    def _iterate(self, u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, g: torch.Tensor, rho_c: torch.Tensor,
                 grad: torch.Tensor, n: int, first: int, pixels: int) -> tuple[torch.Tensor, ...]:
        """The outer and inner iterations of one warping, in blocks of `check_every` iterations.
        A pair stops at the first iteration whose sum of squared updates is at most epsilon^2 x
        pixels (OpenCV's test), which ends its inner and outer iterations: from then on it is
        masked (its u, p and median filter untouched) and, once few pairs go on, left out of the
        rows iterated. After each block the host reads how many pairs go on: that read is the
        only wait for the device."""
        p, schedule = self.p, self.schedule
        per_pair = p["stopping"] == "per_pair"
        tolerance = float(np.float32(p["epsilon"] ** 2 * pixels)) if per_pair else -1.0  # fixed: none stops
        constants = {"lt": float(np.float32(p["lambda"] * p["theta"])), "theta": float(np.float32(p["theta"])),
                     "taut": float(np.float32(p["tau"] / p["theta"])), "tolerance": tolerance}
        active = torch.arange(u.shape[0], device=u.device) < n  # the padding rows never iterate
        rows, going, iterated = None, n, first  # rows: the rows iterated (None: the first `first`)
        if first < u.shape[0]:
            rows = torch.arange(first, device=u.device)
        for _ in range(p["outer_iterations"]):
            for start in range(0, p["inner_iterations"], schedule.check_every):
                steps = min(schedule.check_every, p["inner_iterations"] - start)
                u, px, py, g, rho_c, grad, active, rows, count = self.block(
                    u, px, py, g, rho_c, grad, active, rows, steps=steps,
                    median=p["median_filtering"] if start == 0 and p["median_filtering"] > 1 else 0,
                    masked=going < iterated or steps > 1, **constants)
                if not per_pair:
                    continue
                began = time.perf_counter()
                going = int(count)  # the host synchronisation
                self.waited_s += time.perf_counter() - began
                if not going:
                    return u, px, py
                if going <= (iterated // 2 if schedule.pow2 else iterated - 1):
                    iterated = next_pow2(going) if schedule.pow2 else going
                    rows = self._rows_going(active, rows, iterated)
        return u, px, py

    @staticmethod
    def _rows_going(active: torch.Tensor, rows: torch.Tensor | None, keep: int) -> torch.Tensor:
        """The first `keep` of the rows iterated, those of pairs going on first (on the device)."""
        live = active if rows is None else active.index_select(0, rows)
        order = torch.argsort(live.to(torch.int8), descending=True, stable=True)[:keep]
        return order if rows is None else rows.index_select(0, order)

    def _block(self, u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, g: torch.Tensor, rho_c: torch.Tensor,
               grad: torch.Tensor, active: torch.Tensor, rows: torch.Tensor | None, *, steps: int, median: int,
               masked: bool, lt: float, theta: float, taut: float, tolerance: float) -> tuple[Any, ...]:
        """`steps` inner iterations, after the median filter where `median` is its size, of the
        rows `rows` (None: all); `masked` False where every row iterated goes on. Rows given are
        updated in place. Returns the arguments' new values and how many pairs go on."""
        full = (u, px, py, g, rho_c, grad, active)
        if rows is not None:
            u, px, py, g, rho_c, grad, active = (t.index_select(0, rows) for t in full)
        if median:
            u = self.median(u, active if masked else None, median)
        for _ in range(steps):
            u, px, py, active, count = self.step(u, px, py, g, rho_c, grad, active if masked else None,
                                                 lt, theta, taut, tolerance)
            masked = True  # a pair may stop at any step
        if rows is None:
            return u, px, py, g, rho_c, grad, active, rows, count
        for whole, part in zip(full[:3] + full[6:], (u, px, py, active)):
            whole.index_copy_(0, rows, part)
        return (*full, rows, count)
