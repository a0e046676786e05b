"""Data parallelism for the updates (issue 17, first step): every rank holds the whole batch and
takes the same optimiser steps; each mini-batch's micro-batches are split between the ranks.

Per mini-batch, every rank computes the normalisers on the whole mini-batch (as one process
does), backpropagates its contiguous share of the micro-batches (:meth:`Dist.my_share`), then the
gradients and the step statistics are *summed* across ranks (:meth:`Dist.all_reduce_grads`,
:meth:`Dist.all_reduce_sum`). Since every micro-batch's loss is already divided by its
mini-batch's counts, the sum is the gradient of the mini-batch loss: the update is the
single-process update up to float summation order. With :meth:`Dist.single` nothing is
communicated and the single-process code path is unchanged.

Launch with ``torchrun --nproc_per_node N ...`` and call :func:`init_from_env` (gloo on CPU,
nccl on CUDA).
"""

from __future__ import annotations

import atexit
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch.distributed.tensor import DTensor

__all__ = [
    "SINGLE",
    "Dist",
    "MainRankFailed",
    "full_optimizer_state",
    "full_parameters",
    "full_state_dict",
    "init_from_env",
    "is_sharded",
    "shard_model",
    "shard_optimizer_state",
]

#: How long a collective waits for the other ranks (rank 0 alone evaluates and writes while the
#: others wait at the next collective; gloo's default of 30 minutes is too short for that).
TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Dist:
    """This process's place among the data-parallel ranks (``rank`` of ``world_size``)."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"bad rank {self.rank} of world size {self.world_size}")

    @classmethod
    def single(cls) -> Dist:
        """One process: no collective is ever called."""
        return cls(0, 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def my_share(self, items: Iterable) -> Iterable:
        """This rank's contiguous share of ``items``: rank r of W gets
        ``items[r*n//W : (r+1)*n//W]`` (a rank may get none). One process: ``items`` itself,
        untouched (a generator stays lazy)."""
        if self.world_size == 1:
            return items
        items = list(items)
        n, r, w = len(items), self.rank, self.world_size
        return items[r * n // w : (r + 1) * n // w]

    def my_work(self, items: Iterable, *, equal: bool = False) -> Iterable[tuple[Any, bool]]:
        """``(item, keep)`` for this rank's share (:meth:`my_share`; ``keep`` True). ``equal``:
        every rank gets the same number of entries (the largest share, ``ceil(n/W)``), a short
        rank's extra ones repeating an item with ``keep`` False (to be run with its loss times
        zero): FSDP2 needs every rank to run the same forwards and backwards."""
        if not equal:
            return ((x, True) for x in self.my_share(items))
        items = list(items)
        mine = list(self.my_share(items))
        most = -(-len(items) // self.world_size)
        return [(x, True) for x in mine] + [(items[-1], False) for _ in range(most - len(mine))]

    def all_reduce_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Sum ``.grad`` of ``params`` across ranks, in place. A parameter without a gradient on
        some rank counts as zeros there; one without a gradient on every rank keeps ``None``
        (as in one process, where e.g. a step with no value target leaves the heads' grads
        unset)."""
        if self.world_size == 1:
            return
        # FSDP2's parameters (DTensors) have had their gradients reduce-scattered already
        params = [p for p in params if not isinstance(p, DTensor)]
        if not params:
            return
        device = _comm_device(params[0].device)
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
        tdist.all_reduce(has, op=tdist.ReduceOp.MAX)
        summed = [p for p, any_grad in zip(params, has.tolist(), strict=True) if any_grad]
        for p in summed:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        # one collective per dtype and device over a flat copy of the gradients, not one per
        # tensor: a tiny model has dozens of small tensors, and each call has a fixed latency
        buckets: dict[tuple, list[torch.Tensor]] = {}
        for p in summed:
            buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
        for grads in buckets.values():
            flat = torch.cat([g.reshape(-1) for g in grads]).to(device)
            tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
            for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(part.view_as(g))

    def all_reduce_sum(self, values: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
        """The sum across ranks of each statistic (a key missing on a rank counts as 0); the
        result holds every key some rank has."""
        local = {k: float(v) for k, v in values.items()}
        if self.world_size == 1:
            return local
        key_lists: list[list[str] | None] = [None] * self.world_size
        tdist.all_gather_object(key_lists, sorted(local))
        keys = sorted({k for ks in key_lists for k in ks or ()})
        if not keys:
            return {}
        buf = torch.tensor(
            [local.get(k, 0.0) for k in keys], dtype=torch.float64, device=_comm_device()
        )
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        return dict(zip(keys, buf.tolist(), strict=True))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank. One process:
        ``[obj]``."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable), on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run by rank 0 alone, its (picklable) result returned on every rank. When it
        raises, rank 0 raises that error and every other rank :class:`MainRankFailed`: all stop
        together, none left waiting in a collective for a rank that is gone."""
        if self.world_size == 1:
            return fn()
        error, result = None, None
        if self.is_main:
            try:
                result = fn()
            except BaseException as e:
                self.broadcast((_picklable(e), None))
                raise
        error, result = self.broadcast((error, result))
        if error is not None:
            raise MainRankFailed(error)
        return result

    def sum_(self, tensors: Sequence[torch.Tensor | None]) -> None:
        """Sum each tensor across ranks, in place (None entries skipped). A rank that filled
        only its share of a zero-initialised tensor gets the whole, exactly: x + 0 is x."""
        if self.world_size == 1:
            return
        for t in tensors:
            if t is not None:
                t_comm = t.to(_comm_device(t.device))
                tdist.all_reduce(t_comm, op=tdist.ReduceOp.SUM)
                if t_comm is not t:
                    t.copy_(t_comm)

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.world_size > 1:
            tdist.barrier()

    def same_parameters(self, module: torch.nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's (exact copies): the replicas start
        equal whatever each rank's initialisation drew."""
        if self.world_size == 1:
            return
        for t in [*module.parameters(), *module.buffers()]:
            if isinstance(t, DTensor):
                continue
            data = t.data.to(_comm_device(t.device))
            tdist.broadcast(data, src=0)
            if data is not t.data:
                t.data.copy_(data)


class MainRankFailed(RuntimeError):
    """Raised on the other ranks when rank 0's part of :meth:`Dist.on_main` failed; rank 0
    reports the error itself. ``error`` is rank 0's error (a copy)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"process 0 failed: {error}")
        self.error = error


def _picklable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (to be sent to the other ranks), else a RuntimeError
    with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


SINGLE = Dist.single()  # the default of the updates' ``dist`` argument


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether :func:`shard_model` (FSDP2) sharded ``model``."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def shard_model(policy, dist: Dist, *, mixed_precision: bool = False):
    """Opt-in FSDP2: shard the policy's LM (each decoder layer, then the LM), a separate critic
    backbone (the same) and the value head across the ranks; returns ``policy``. Gradients are
    *summed* across ranks (the divide factor is 1, a plain SUM reduce-scatter), as
    :meth:`Dist.all_reduce_grads` does, so the updates stay the single-process ones. Build the
    optimiser after sharding. The frozen reference model is not sharded. One process: a no-op.

    ``mixed_precision``: the LM and critic compute in bfloat16 (forward, backward, generation)
    while their weights, optimizer states and gradient sums stay float32 (FSDP2's
    ``MixedPrecisionPolicy``); the value head stays float32 throughout."""
    if dist.world_size == 1:
        return policy
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy()  # the weights' own dtype
    if mixed_precision:
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in (policy.lm, getattr(policy, "critic_backbone", None)):
        if module is None:
            continue
        # a LoRA model's transformers model (peft's wrappers call it: generation would
        # otherwise bypass the sharded root)
        module = module.get_base_model() if hasattr(module, "get_base_model") else module
        for layer in module.modules():
            if type(layer).__name__.endswith("DecoderLayer"):
                fully_shard(layer, mp_policy=mp)
        fully_shard(module, mp_policy=mp)
    if getattr(policy, "value_head", None) is not None:
        fully_shard(policy.value_head)
        # FSDP2 warns that the head's output is a view, unsafe for in-place ops; the policy only
        # scales and masks it out of place (PolicyModel.values)
        warnings.filterwarnings("ignore", "FSDP2-wrapped module .* returned a view tensor")
    for m in policy.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    return policy


@contextmanager
def full_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Every rank (a collective: all must enter) holds ``model``'s whole weights until the block
    ends, and its forward passes communicate nothing: each rank can generate for its own
    episodes, for as many steps as they take, and rank 0 alone can evaluate. A model that is not
    sharded: nothing happens. The weights take their full memory on every rank meanwhile, as
    replicas would."""
    from torch.distributed.fsdp import FSDPModule

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in sharded:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """``module.state_dict()`` with every sharded tensor gathered whole, on rank 0's CPU (a
    collective: every rank calls it; the others get None, holding no whole copy)."""
    # tied weights (one parameter under two names) stay one tensor, which saving then writes
    # once, as a one-process save does; the same on every rank, so the gathers stay in step
    first: dict[int, str] = {}
    alias = {
        n: first.setdefault(id(p), n) for n, p in module.named_parameters(remove_duplicate=False)
    }
    state: dict[str, Any] = {}
    for k, v in module.state_dict().items():
        source = alias.get(k, k)  # a tied weight's first name (buffers: their own)
        state[k] = state[source] if source in state else _whole(v)
    return state if _rank() == 0 else None


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """``optimizer.state_dict()`` with every sharded state gathered whole, on rank 0 (a
    collective; the others get None): the state one process saves, which one process or any
    number of ranks loads (:func:`shard_optimizer_state`)."""
    sd = optimizer.state_dict()
    state = {i: {k: _whole(v) for k, v in s.items()} for i, s in sorted(sd["state"].items())}
    return {**sd, "state": state} if _rank() == 0 else None


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``optimizer.load_state_dict(full_state)`` over a sharded model's parameters: cut every
    per-parameter state (``exp_avg``, ...) into this rank's shard, as the parameter is cut (no
    communication: each rank keeps its own slice)."""
    from torch.distributed.tensor import distribute_tensor

    for p, state in optimizer.state.items():
        if not isinstance(p, DTensor):
            continue
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and not isinstance(v, DTensor) and v.shape == p.shape:
                full = v.to(p.device_mesh.device_type)
                state[k] = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)


def _rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def _whole(v: Any) -> Any:
    """A state entry as rank 0 saves it: a sharded tensor gathered (every rank takes part), on
    the CPU of rank 0 only."""
    if isinstance(v, DTensor):
        v = v.full_tensor()
    if not isinstance(v, torch.Tensor):
        return v
    return v.cpu() if _rank() == 0 else None


def _comm_device(device: torch.device | None = None) -> torch.device:
    """Where a collective's tensor must live: CUDA for nccl, the CPU otherwise."""
    if tdist.get_backend() == "nccl":
        if device is not None and device.type == "cuda":
            return device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_from_env() -> Dist:
    """The :class:`Dist` of this process from torchrun's ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` (one process when ``WORLD_SIZE`` is unset or 1). With more than one process,
    initialises ``torch.distributed`` (``MASTER_ADDR``/``MASTER_PORT`` from the environment):
    nccl with this process on GPU ``LOCAL_RANK`` when CUDA is available, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist.single()
    rank = int(os.environ["RANK"])
    if not tdist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
            backend = "nccl"
        else:
            backend = "gloo"
        tdist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
        # Tear the group down while the interpreter is still whole: left to interpreter
        # finalisation, gloo's worker threads abort the process ("terminate called without an
        # active exception") in about 1 exit in 4 (measured: 5 of 20 2-rank runs; 0 of 20 with this)
        atexit.register(_destroy_process_group)
    return Dist(rank, world)


def _destroy_process_group() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
