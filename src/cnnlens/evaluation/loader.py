"""Loading the fixed blocks of the dataset order with a ``torch.utils.data.DataLoader``.

Block ``b`` is always images ``b·B … (b+1)·B − 1`` of the dataset order (B = the batch size), whatever the number of
workers or ranks, so a block's numbers never depend on how the run was split. Workers (``--workers N``) decode and
resize; the loader keeps the block order; on CUDA the stacked images are pinned so the copy to the device can be
non-blocking.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ..data.sample import Sample
from ..errors import CnnlensError


@dataclass
class Block:
    """Block ``index``: its samples and their images stacked (B,C,H,W) on the host (pinned on CUDA)."""
    index: int
    samples: list[Sample]
    images: torch.Tensor
    error: tuple[type, str] | None = field(default=None, repr=False)

    def pin_memory(self) -> "Block":
        self.images = self.images.pin_memory()
        return self


class BlockDataset(torch.utils.data.Dataset):
    """The blocks ``blocks`` (indices into the fixed block order) of ``dataset``, one item per block."""

    def __init__(self, dataset, block_size: int, blocks: Sequence[int]):
        self.dataset, self.block_size, self.blocks = dataset, int(block_size), list(blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Block:
        b = self.blocks[i]
        lo, hi = b * self.block_size, min((b + 1) * self.block_size, len(self.dataset))
        try:
            samples = [self.dataset[j] for j in range(lo, hi)]
        except CnnlensError as exc:          # crosses the worker boundary as (type, message): still one line
            return Block(b, [], torch.empty(0), error=(type(exc), str(exc)))
        images = torch.stack([s.image for s in samples])
        for k, s in enumerate(samples):      # share the stacked storage (sent once between processes)
            s.image = images[k]
        return Block(b, samples, images)


def _identity(block: Block) -> Block:
    return block


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)              # decoding workers: one thread each, the main process keeps the rest


def iter_blocks(dataset, block_size: int, blocks: Sequence[int], *, workers: int = 0,
                device: torch.device | str = "cpu") -> Iterator[Block]:
    """Yield the blocks in the given order; decoding in ``workers`` processes (0: in this process)."""
    cuda = torch.device(device).type == "cuda"
    loader = torch.utils.data.DataLoader(
        BlockDataset(dataset, block_size, blocks), batch_size=None, shuffle=False, num_workers=workers,
        collate_fn=_identity, pin_memory=cuda, worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None, persistent_workers=False)
    it = iter(loader)
    try:
        for block in it:
            if block.error is not None:
                kind, message = block.error
                try:
                    error = kind(message)
                except TypeError:                     # an error type with another signature: keep the message
                    error = CnnlensError(message)
                raise error
            yield block
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def to_device(block: Block, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The block's images on ``device`` (non-blocking from pinned memory on CUDA)."""
    return block.images.to(device=device, dtype=dtype, non_blocking=True)
