"""torch.distributed for ``cnnlens evaluate``: no launcher of our own, ``torchrun`` starts the processes.

``torchrun --nproc-per-node N -m cnnlens evaluate ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; :func:`init_from_env` joins the process group (gloo on the CPU, nccl on CUDA, one GPU per local
rank). The runner splits the fixed blocks of the dataset order over the ranks (block b → rank b mod world), and the
ranks agree once per block on a status (go on / stop on a signal / an error in some rank), so no rank waits for a
peer that has stopped.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import CnnlensError

OK, STOP, ERROR = 0, 1, 2


class PeerFailed(CnnlensError):
    """Another rank of a torchrun run failed or died (a failing rank prints its own message)."""


def _collective(fn, *args):
    """Run a collective; a peer that died (killed, crashed) becomes one PeerFailed error instead of a traceback."""
    try:
        return fn(*args)
    except RuntimeError as exc:                # gloo / nccl: connection closed, timeout, ...
        err = PeerFailed(f"another process of the run stopped ({str(exc).splitlines()[0][:120]}); run the same "
                         f"command again to resume")
        err.print_on_main = True               # nobody else has printed anything: rank 0 says it
        raise err from None


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (``world == 1``: no process group)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def _device(self) -> torch.device:
        import torch.distributed as dist
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist
            _collective(dist.barrier)

    def max(self, value: int) -> int:
        """The largest ``value`` over the ranks (a collective: every rank must call it)."""
        if not self.active:
            return int(value)
        import torch.distributed as dist
        t = torch.tensor([int(value)], dtype=torch.int64, device=self._device())
        _collective(dist.all_reduce, t, dist.ReduceOp.MAX)
        return int(t.item())

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (a collective)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out: list = [None] * self.world
        _collective(dist.all_gather_object, out, obj)
        return out


def current() -> Dist:
    """The process group this process belongs to (``Dist()`` when none is initialised)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun), before the group is joined."""
    return int(os.environ.get("RANK", 0)) if launched_by_torchrun() else 0


def die_with_launcher() -> None:
    """Linux: end this worker when its torchrun agent ends (``PR_SET_PDEATHSIG``). torchrun starts each worker in a
    session of its own, so a kill of torchrun's process group (a scheduler, ``kill -- -PGID``) would otherwise leave
    the workers running on, writing into a results folder that a resume is already using."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)          # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):                         # pragma: no cover - no prctl: nothing to do
        return
    if os.getppid() != parent or parent == 1:                 # the agent died before the call: stop now
        os._exit(1)


def init_from_env(device: str = "cpu", timeout_s: float = 3600.0) -> tuple[Dist, str]:
    """Join torchrun's process group when launched by it (``WORLD_SIZE`` > 1); returns (Dist, this rank's device).

    gloo for the CPU, nccl for CUDA; on CUDA each process takes the GPU ``cuda:LOCAL_RANK``. Outside torchrun (or with
    one process) nothing is initialised and the device is returned unchanged."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return Dist(), device
    import torch.distributed as dist
    die_with_launcher()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        kwargs = device_id_kwargs(dist.init_process_group, torch.device(device)) if cuda else {}
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s), **kwargs)
    return current(), device


def device_id_kwargs(init_process_group, device) -> dict:
    """``{"device_id": device}`` when ``init_process_group`` takes it (torch ≥ 2.3: binds NCCL to the rank's GPU at
    once), else ``{}`` (older torch: the group binds lazily to the current device, set above)."""
    import inspect
    try:
        params = inspect.signature(init_process_group).parameters
    except (TypeError, ValueError):
        return {}
    return {"device_id": device} if "device_id" in params else {}


def shutdown() -> None:
    """Leave the process group (if any)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
