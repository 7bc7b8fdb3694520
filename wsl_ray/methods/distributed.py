"""What a loss over the global batch needs from torch.distributed (DDP under Ray Train).

A loss that sees every worker's embeddings (`--whiten_global`, `--global_negatives`) works
like this on each of W workers:
  1. `gather_batch` all-gathers the [k, n, emb] embeddings into [k, W n, emb], in rank order,
     with gradients: its backward sums the gradients of all ranks for this rank's rows.
  2. The worker's loss L_r covers its share, so that the global loss is L = mean_r L_r (its
     own rows' terms, averaged over its n rows, for instance).
  3. Backward gives on rank r dL_r'/dh_r summed over r' = W dL/dh_r; DDP's all-reduce averages
     the parameter gradients over ranks: sum_r W dL/dh_r dh_r/dtheta / W = dL/dtheta, the
     single-process gradient on the global batch. (Each L_r is W times its share of L.)
  4. `with_global_value` makes the returned value L itself on every rank (so rank 0 reports
     the global loss), without changing the gradient.
Both collectives are functional ones, so they also trace under torch.compile.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed import _functional_collectives as fc


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(h: torch.Tensor) -> torch.Tensor:
    """[k, n, emb] on each rank -> [k, W n, emb]: rank r's rows at r n ... (r + 1) n - 1.

    Gradients flow back to every rank's rows (the backward is a reduce-scatter).
    """
    rows_first = h.transpose(0, 1).contiguous()  # the collective gathers along dim 0
    gathered = fc.all_gather_single_autograd(rows_first, 0, dist.group.WORLD)
    return gathered.transpose(0, 1)


def with_global_value(loss: torch.Tensor) -> torch.Tensor:
    """`loss` (this rank's L_r) with the value mean_r L_r and the gradient of L_r."""
    total = fc.all_reduce(loss.detach(), "sum", dist.group.WORLD)
    return loss + (total / dist.get_world_size() - loss).detach()
