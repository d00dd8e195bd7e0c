"""Data-parallel training (torch.distributed) for the one training loop.

Where the ranks come from (`DistributedContext.from_env`), in this order:
  1. RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in the environment (torchrun, or set by hand);
  2. a submitit job with several tasks (`submitit.helpers.TorchDistributedEnvironment`: rank, world size and
     master address from the job environment; MASTER_PORT if set, else a port derived from the job id);
  3. otherwise one process (no process group, every collective below is a no-op).
Backend: gloo on CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK).

How a step is split: step s's global batch (a pure function of seed and s) and its masks are drawn for the
GLOBAL batch identically on every rank; each rank keeps its contiguous shard of the samples (`shard`), so
world size changes how a step is computed, not what it computes. Every loss here is a mean over samples
with the same number of tokens each, so the mean of the ranks' gradients is the gradient of the global batch;
with padded masks (rows of different lengths), each rank's loss divides by the global batch's token count
(MaskPair.spread_over), so the same mean of gradients again is the global batch's token-weighted gradient.

Why gradients are all-reduced after backward rather than through `DistributedDataParallel`: an objective
calls its modules (encoder once per mask pair, predictor, a frozen or EMA target) inside `objective.loss`,
not through one forward of a wrapped module. DDP would have to wrap each trainable module inside the
objective (changing the objects the objective holds and their state-dict keys) and needs `static_graph`
for a module run several times per step. One explicit averaging of the gradients after backward
(`average_gradients`, bucketed flat all-reduces) keeps every objective unchanged and makes the step exactly
the single-process step on the global batch; it gives up DDP's overlap of communication with backward.
The EMA target of V-JEPA is updated from the (identical) encoder weights on every rank, so it stays identical
without communication; `check_in_sync` verifies this (bit-exact fingerprints) whenever a checkpoint is saved.

Sharded training (`train.shard=fsdp`, `shard_modules`): for networks too large to hold a copy of weights, gradients
and AdamW state per GPU, PyTorch's FSDP2 (`fully_shard`) shards the modules a checkpoint holds (the trained
networks and V-JEPA's EMA target) over the processes: each transformer block is one unit (all-gathered just before
it runs, freed after, its gradients reduce-scattered as soon as backward has them), the rest of each network
(embeddings, norms, mask tokens) the root unit. It composes with the design above: the batch and masks are split
as before, the objective calls its modules as before (FSDP2 works by hooks on the modules themselves, not by a
wrapper), and the reduce-scatter averages gradients as the all-reduce did, so the step is the same. The EMA target
is sharded exactly as the encoder, so each rank updates its slice of the target from its slice of the encoder (no
communication). A frozen SALT teacher, loaded from file and never saved, stays whole on every rank (no all-gather
per forward). Checkpoints hold whole tensors (`full_state`: gathered to rank 0), the format of one process, so a
sharded run resumes unsharded and the reverse: modules are restored whole, then sharded (`shard_optimizer_state`
cuts the optimizer's moments like their parameters).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

from salt.config import ConfigError

_BUCKET_ELEMENTS = 1 << 25   # 32M gradient entries per all-reduce (128 MB in fp32)


@dataclass
class DistributedContext:
    """Who this process is among the training processes. The default is one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False   # this context initialised the process group (and `close` destroys it)

    # -- setup ---------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, device_type: str = "cpu") -> "DistributedContext":
        """The context of this process (see the module docstring); initialises the process group when there
        are several processes and none is initialised yet."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        found = _from_torch_env() or _from_submitit()
        if found is None:
            return cls()
        rank, world_size, local_rank, addr, port = found
        if world_size == 1:
            return cls()
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method=f"tcp://{addr}:{port}",
                                rank=rank, world_size=world_size)
        return cls(rank, world_size, local_rank, owns_group=True)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> "DistributedContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- who does what -------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files (config, metrics, checkpoints, done marker, wandb, progress bar)."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """cuda -> cuda:LOCAL_RANK under several processes; anything else unchanged."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.enabled else device

    def local_batch_size(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ConfigError(f"train.batch_size={batch_size} is not divisible by the number of training processes "
                              f"({self.world_size}): the global batch is split evenly across them")
        return batch_size // self.world_size

    def shard(self, items):
        """This rank's contiguous share of the leading dimension of a list or tensor (global -> local)."""
        n = self.local_batch_size(len(items))
        return items[self.rank * n:(self.rank + 1) * n]

    # -- collectives (no-ops for one process) ------------------------------------------------------------
    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Scalar tensors -> their means over the ranks, as floats (one all-reduce)."""
        flat = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        if self.enabled:
            dist.all_reduce(flat)
            flat /= self.world_size
        return dict(zip(values, flat.tolist()))

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's [n, ...] tensor (the same n on each), concatenated in rank order, on every rank."""
        if not self.enabled:
            return local
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local.contiguous())
        return torch.cat(out)

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is True on any rank (one all-reduce of one number)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int64, device=self._collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum(self, value: int, device: torch.device) -> int:
        if not self.enabled:
            return int(value)
        t = torch.tensor(int(value), dtype=torch.int64, device=device)
        dist.all_reduce(t)
        return int(t)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks. Which parameters have a gradient does not depend
        on the data, so the list below is the same on every rank. A sharded parameter's gradient (a DTensor) is
        this rank's slice of the mean already (FSDP2's reduce-scatter in backward)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None and not isinstance(p.grad, DTensor)]
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in bucket:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def broadcast_modules(self, modules: dict[str, torch.nn.Module]) -> None:
        """Rank 0's parameters and buffers on every rank (they already agree: same seed or same checkpoint;
        this makes it so by construction, as DDP does)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for module in modules.values():
                for t in module.state_dict().values():
                    dist.broadcast(t, src=0)

    def check_same(self, value: int, what: str) -> None:
        """Raise on every rank if the ranks disagree on an integer (e.g. the step they resumed from)."""
        if not self.enabled:
            return
        got = self.all_gather_ints(torch.tensor([int(value)]))
        if len({int(g[0]) for g in got}) > 1:
            raise RuntimeError(f"training processes disagree on {what}: {[int(g[0]) for g in got]} by rank "
                               "(is the run folder on a file system every rank sees?)")

    def check_in_sync(self, modules: dict[str, torch.nn.Module]) -> None:
        """Raise on every rank if any rank's weights differ from rank 0's by a single bit. A sharded module is
        skipped: each of its weights exists once (every rank holds its own slice, the EMA target's slice beside
        the encoder's), so no two copies can drift apart."""
        modules = {name: m for name, m in modules.items() if not is_sharded(m)}
        if not self.enabled or not modules:
            return
        from salt.objectives import fingerprint   # lazy: objectives import the training schedules
        local = torch.cat([fingerprint(m) for m in modules.values()])
        got = self.all_gather_ints(local)
        bad = [r for r, g in enumerate(got) if not torch.equal(g, got[0])]
        if bad:
            raise RuntimeError(f"the weights of rank(s) {bad} differ from rank 0's ({', '.join(modules)}): the "
                               "training processes diverged")

    def all_gather_ints(self, local: torch.Tensor) -> list[torch.Tensor]:
        local = local.to(device=self._collective_device(), dtype=torch.int64)
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local)
        return [t.cpu() for t in out]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    # -- sharding (FSDP2; see the module docstring) ----------------------------------------------------------
    def shard_modules(self, modules: dict[str, torch.nn.Module], param_dtype: torch.dtype | None = None) -> None:
        """`fully_shard` each module over all processes: every block of its `blocks` a unit, then the module
        (the root: the remaining parameters). A module without trained parameters (an EMA target, run under
        no_grad) frees its root's gathered weights after each forward too; a trained root keeps them for backward.
        `param_dtype` (the run's autocast dtype, bf16): weights are cast to it before they are gathered and
        computed with in it (half the all-gather traffic and gathered memory); gradients are reduced in fp32 and
        the sharded weights, AdamW moments and checkpoints stay fp32. One process: nothing to shard (its step is
        the unsharded step)."""
        if not self.enabled:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mesh = init_device_mesh(self._collective_device().type, (self.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
        for module in modules.values():
            trained = any(p.requires_grad for p in module.parameters())
            for block in getattr(module, "blocks", ()):
                fully_shard(block, mesh=mesh, mp_policy=policy)
            fully_shard(module, mesh=mesh, reshard_after_forward=None if trained else True, mp_policy=policy)

    def full_state(self, state):
        """A state dict (a module's or an optimizer's) with each sharded tensor gathered whole, on CPU: what one
        process would hold, so checkpoints have one format. Every rank must call it (one all-gather per sharded
        tensor, in the dict's order, the same on every rank); only rank 0 keeps the gathered tensors (None
        elsewhere, so the other ranks never hold a whole copy). Without sharding: `state` itself."""
        if isinstance(state, dict):
            return {k: self.full_state(v) for k, v in state.items()}
        if isinstance(state, (list, tuple)):
            return type(state)(self.full_state(v) for v in state)
        if isinstance(state, DTensor):
            whole = state.full_tensor()
            return whole.cpu() if self.is_main else None
        return state

    @staticmethod
    def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> dict:
        """A saved (whole) optimizer state dict made to fit `optimizer` over sharded parameters: each state tensor
        shaped like its parameter (AdamW's moments) cut as that parameter is; scalars (the step) unchanged. Every
        rank read the same checkpoint, so each takes its own slice (no communication). `state` of unsharded
        parameters comes back as it is."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(params) != sum(len(g["params"]) for g in state["param_groups"]):
            raise RuntimeError(f"the saved optimizer state has {sum(len(g['params']) for g in state['param_groups'])} "
                               f"parameters, the optimizer {len(params)}: the checkpoint does not match the config")
        out = {}
        for index, values in state["state"].items():
            param = params[index]
            if isinstance(param, DTensor):
                values = {k: distribute_tensor(v.to(param.device), param.device_mesh, param.placements,
                                               src_data_rank=None)
                          if torch.is_tensor(v) and v.shape == param.shape else v for k, v in values.items()}
            out[index] = values
        return {**state, "state": out}


def is_sharded(module: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Each global batch of `sampler` cut to this rank's samples, so a rank loads only what it trains on
    (every sample carries its own seed, so the local samples are exactly those of the global batch)."""

    def __init__(self, sampler, context: DistributedContext):
        self.sampler, self.context = sampler, context

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield self.context.shard(batch)


def _buckets(tensors: list[torch.Tensor]):
    bucket, size = [], 0
    for t in tensors:
        if bucket and (size + t.numel() > _BUCKET_ELEMENTS or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def _from_torch_env():
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    world_size = int(os.environ["WORLD_SIZE"])
    if world_size > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world_size} is set but {', '.join(missing)} is not: torch.distributed "
                               "needs the rank-0 host and a free port")
    return (int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)),
            os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""))


def _from_submitit():
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        import submitit
        from submitit.helpers import TorchDistributedEnvironment
        if submitit.JobEnvironment().num_tasks <= 1:
            return None
        env = TorchDistributedEnvironment()
    except (ImportError, RuntimeError):   # not inside a submitit job after all
        return None
    return env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port


__all__ = ["DistributedContext", "ShardedBatchSampler", "is_sharded"]
