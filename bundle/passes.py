"""A study's network passes, counted from the run itself, and the floor they set on this machine: the images each
network took by kind (``forward``: no gradient; ``backward``: forward and backward to the input, weights frozen;
``second_order``: forward, backward to the input kept in the graph and a backward through that, as an attack on a
gradient map makes; ``train``: a training step), times the best per-image time of a pass of that kind. A slow run is then the machine
when it sits near its floor, the code when it does not. The work a study does besides its passes (:data:`WORK`) is
timed apart, by kind, so that what lies beyond the floor is named."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

KINDS = ("forward", "backward", "second_order", "train")
# the work besides the passes, timed apart (:class:`work`); none of it runs a network
WORK = {
    "pic_blurring": "PIC's blurring and encoding",
    "xrai_regions": "XRAI's regions",
    "metrics": "the metrics' arithmetic",  # normalising maps, SSIM, rank correlations, localisation and overlap scores
    "attack_steps": "the attacks' losses and steps",  # PSC's, between the passes of each step
    "weights": "re-initialising and restoring weights",  # the randomisation criteria's steps, EpochTrust's
    "data": "loading images",  # an engine's or a criterion's batches, the lesion-free twins
    "statistics": "the statistics",
    "map_cache": "the map cache's reads and writes",
}
_SECOND_ORDER = contextvars.ContextVar("second_order", default=False)
_COUNTING: list[PassCounter] = []  # the counters counting now (a study's own, and a benchmark's around it)
_WORK_LOCK = threading.Lock()  # a block's start and end, whichever thread runs it


@contextlib.contextmanager
def second_order(enabled: bool = True) -> Iterator[None]:
    """Count the differentiated passes run inside as ``second_order`` (their input gradient is differentiated again:
    an attack on a gradient map), or, ``enabled`` False, as ``backward`` again (a gradient taken only down to a layer,
    as Grad-CAM's, costs about one backward pass more when differentiated)."""
    token = _SECOND_ORDER.set(enabled)
    try:
        yield
    finally:
        _SECOND_ORDER.reset(token)


class PassCounter:
    """Images through the study's networks (the modules ``bundle.networks`` builds, which carry ``architecture``) by
    (stage, architecture, kind), the input shape of each architecture, the seconds inside their forward calls by
    stage, and the seconds of each kind of :data:`WORK` by (stage, kind). ``stage`` names what runs now (set by the
    caller; one stage by default); ``paused`` stops counting.

    With ``synchronise``, on a GPU, each outermost work block waits for the kernels queued before it (the passes'
    time) and for its own, so that asynchronous work is timed where it runs, at the cost of the GPU waiting on each
    block: what a benchmark wants. A study's own counter leaves it off: on a GPU its work times may then hold waits for
    passes queued before a block (a metric copying maps to the CPU waits for them)."""

    def __init__(self, stage: str = "study", synchronise: bool = False) -> None:
        self.stage, self.paused, self.synchronise = stage, False, synchronise
        self.images: dict[tuple[str, str, str], int] = defaultdict(int)
        self.forward_seconds: dict[str, float] = defaultdict(float)
        self.work_seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._started: float | None = None
        self._depth = 0
        self._working = 0  # work blocks open now, and the outermost's start, stage and kind
        self._work_started, self._work_stage, self._work_kind = 0.0, stage, ""

    @staticmethod
    def _network(module: nn.Module, args: tuple) -> str | None:
        name = getattr(module, "architecture", None)
        return name if name is not None and args and torch.is_tensor(args[0]) else None

    def before(self, module: nn.Module, args: tuple) -> None:
        if self._network(module, args) is None:
            return
        self._depth += 1  # a network called inside another (none here) is the outer one's pass
        if self._depth == 1:
            self._started = time.perf_counter()

    def after(self, module: nn.Module, args: tuple, output: object) -> None:
        name = self._network(module, args)
        if name is None:
            return
        self._depth -= 1
        if self._depth or self.paused:
            return
        if module.training:
            kind = "train"
        elif torch.is_grad_enabled() and torch.is_tensor(output) and output.requires_grad:
            kind = "second_order" if _SECOND_ORDER.get() else "backward"
        else:
            kind = "forward"
        self.images[(self.stage, name, kind)] += args[0].shape[0]
        self.shapes[name] = tuple(args[0].shape[1:])
        self.forward_seconds[self.stage] += time.perf_counter() - self._started

    def totals(self) -> dict[str, int]:
        """Images by kind over every stage and architecture."""
        out = dict.fromkeys(KINDS, 0)
        for (_, _, kind), n in self.images.items():
            out[kind] += n
        return out

    def work_totals(self, stage: str | None = None) -> dict[str, float]:
        """Seconds of each kind of :data:`WORK` timed (in one ``stage``, or all), the kinds never timed left out."""
        out: dict[str, float] = {}
        for (at, kind), seconds in self.work_seconds.items():
            if stage in (None, at):
                out[kind] = out.get(kind, 0.0) + seconds
        return out


@contextlib.contextmanager
def counting(counter: PassCounter) -> Iterator[PassCounter]:
    """Count every network pass run inside the context (global module hooks, removed on exit)."""
    handles = [nn.modules.module.register_module_forward_pre_hook(counter.before),
               nn.modules.module.register_module_forward_hook(counter.after)]
    counter._depth = 0
    _COUNTING.append(counter)
    try:
        yield counter
    finally:
        _COUNTING.remove(counter)
        for handle in handles:
            handle.remove()


def _checked_kind(kind: str) -> str:
    if kind not in WORK:
        raise ValueError(f"work must be one of {sorted(WORK)}, got {kind!r}")
    return kind


def _synchronise() -> None:
    """Wait for the GPU's queued kernels, where CUDA is in use (nothing to wait for on a CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


class work(contextlib.ContextDecorator):
    """Time a block (``with work(kind):``) or every call of a function (``@work(kind)``) as ``kind`` of :data:`WORK`,
    for every counter counting and not paused when it starts: its wall seconds (waiting on worker processes
    included) go to the stage running then. A block that starts while another is open, in any thread, is part of
    that one's time (counted once, under the first's kind). Nothing is timed when no counter counts. On a GPU, an
    outermost block waits for the kernels queued before and inside it where a counter asks to (``synchronise``)."""

    _entered = threading.local()  # per thread: the counters each open block entered, innermost last

    def __init__(self, kind: str) -> None:
        self.kind = _checked_kind(kind)

    def __enter__(self) -> None:
        counters = [c for c in _COUNTING if not c.paused]
        if any(c.synchronise for c in counters) and not any(c._working for c in counters):
            _synchronise()
        now = time.perf_counter()
        with _WORK_LOCK:
            for c in counters:
                if not c._working:
                    c._work_started, c._work_stage, c._work_kind = now, c.stage, self.kind
                c._working += 1
        if not hasattr(self._entered, "stack"):
            self._entered.stack = []
        self._entered.stack.append(counters)

    def __exit__(self, *exc) -> bool:
        counters = self._entered.stack.pop()
        try:
            if exc[0] is None and any(c.synchronise and c._working == 1 for c in counters):
                _synchronise()
        finally:  # a failed wait must not leave the block open: every later one would count as nested in it
            now = time.perf_counter()
            with _WORK_LOCK:
                for c in counters:
                    c._working -= 1
                    if not c._working:
                        c.work_seconds[(c._work_stage, c._work_kind)] += now - c._work_started
        return False


def add_work(kind: str, seconds: float) -> None:
    """Add ``seconds`` of ``kind`` of :data:`WORK`, timed by the caller between two events (an engine's batch loading),
    to every counter counting and not paused, at the stage running now; not where a block is open (its time holds
    them)."""
    kind = _checked_kind(kind)
    with _WORK_LOCK:
        for c in _COUNTING:
            if not c.paused and not c._working:
                c.work_seconds[(c.stage, kind)] += seconds


def per_image_seconds(architecture: str, shape: tuple[int, ...], kind: str, batches: tuple[int, ...] = (8, 16, 32),
                      warmup: int = 2, repeats: int = 3, device: torch.device | str = "cpu",
                      budget_s: float | None = None) -> float:
    """Best per-image time of one pass of ``kind`` on an untrained ``architecture`` (a ``bundle.networks`` name) for
    inputs of ``shape`` (C, *spatial), over ``batches``, each the best of ``repeats`` after ``warmup`` passes.

    ``budget_s`` times a batch after the first only when its ``warmup + repeats`` passes would take at most that
    long at the best per-image time so far: the largest batches of the costliest kind cost the most to time and
    gain least (DenseNet121's second-order pass on an AMD EPYC: 158, 171 and 194 ms per image at 8, 16 and 32, the
    batch of 32 taking 20 s to time)."""
    from bundle.networks import build_network
    from bundle.saliency.base import inference_state
    from bundle.saliency.differentiable import activations

    spatial = shape[1:]
    on_gpu = torch.device(device).type == "cuda"

    def synchronise() -> None:  # a GPU pass ends when its kernels do
        if on_gpu:
            torch.cuda.synchronize(device)

    model = build_network(architecture, spatial_dims=len(spatial), image_size=spatial[0]).to(device)

    def seconds_at(batch: int) -> float:
        x = torch.rand(batch, *shape, device=device)
        if kind == "train":
            model.train()
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
            labels = torch.randint(0, 2, (batch,), device=device)

            def one_pass() -> None:
                optimiser.zero_grad()
                nn.functional.cross_entropy(model(x), labels).backward()
                optimiser.step()
        elif kind == "forward":
            def one_pass() -> None:
                with torch.no_grad():
                    model(x)
        elif kind == "backward":
            def one_pass() -> None:
                inputs = x.clone().requires_grad_(True)
                torch.autograd.grad(model(inputs)[:, -1].sum(), inputs)
        else:  # second_order: an attack's step on the input gradient, its ReLUs softplus as the attack's are
            def one_pass() -> None:
                inputs = x.clone().requires_grad_(True)
                gradient, = torch.autograd.grad(model(inputs)[:, -1].sum(), inputs, create_graph=True)
                torch.autograd.grad(gradient.square().sum(), inputs)
        smoothed = activations(model) if kind == "second_order" else contextlib.nullcontext([])
        best = float("inf")
        with inference_state(model) if kind != "train" else contextlib.nullcontext(), smoothed as smooth:
            for a in smooth:
                a.beta = 10.0
            for _ in range(warmup):
                one_pass()
            for _ in range(repeats):
                synchronise()
                start = time.perf_counter()
                one_pass()
                synchronise()
                best = min(best, (time.perf_counter() - start) / batch)
        return best

    return best_over_batches(batches, seconds_at, warmup + repeats, budget_s)


def best_over_batches(batches: Sequence[int], seconds_at: Callable[[int], float], passes: int = 1,
                      budget_s: float | None = None) -> float:
    """The least per-image time ``seconds_at(batch)`` over ``batches``; with ``budget_s``, a batch after the first only
    when its ``passes`` would take at most ``budget_s`` at the least time so far."""
    best = float("inf")
    for i, batch in enumerate(batches):
        if i and budget_s is not None and passes * batch * best > budget_s:
            continue
        best = min(best, seconds_at(batch))
    return best


def floor_seconds(counter: PassCounter, stage: str | None = None, **timing) -> tuple[float, dict[str, float]]:
    """The floor of the counted passes (of one ``stage``, or all): their images times each (architecture, kind)'s
    best per-image time (:func:`per_image_seconds` with ``timing``), and those times by ``architecture/kind``."""
    kinds = sorted({(a, k) for (s, a, k) in counter.images if stage in (None, s)})
    per_image = {(a, k): per_image_seconds(a, counter.shapes[a], k, **timing) for a, k in kinds}
    floor = sum(n * per_image[(a, k)] for (s, a, k), n in counter.images.items() if stage in (None, s))
    return floor, {f"{a}/{k}": seconds for (a, k), seconds in per_image.items()}
