"""Evaluation over several processes (`torchrun ... lewm-fast eval`): the episodes are sharded over the ranks
and the results gathered on rank 0, with the same per-episode outcomes as one process for the same seeds.

What makes an outcome independent of where it runs. The CEM planner draws its noise for a whole batch at
once (randn(E, S, horizon, A)), so an episode's noise depends on which other episodes share its batch;
the random baseline likewise draws for the whole batch. So in this mode:
- episodes are planned in fixed *planning groups* of G consecutive problems (`plan_group`), one batch
  per group and round, and the planner is reseeded from (seed, group, round) before each; a group's
  members, and so its batches, do not depend on the other groups;
- the random baseline draws each episode's actions from its own generator, seeded from (seed, episode);
- ranks own whole groups (group g goes to rank g mod W).
One process with `plan_group=G` therefore gives exactly what W processes give with the same G. Under
torchrun G defaults to ceil(episodes / W), one batch per rank; without torchrun and without `plan_group`
the evaluation plans every episode in one batch with one noise stream (the historical behaviour).
"""

from __future__ import annotations

import math

import numpy as np
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_group(episodes: int, world: int) -> int:
    return max(1, math.ceil(episodes / world))


def owned_episodes(episodes: int, group: int, rank: int, world: int) -> list[int]:
    """The problem indices rank `rank` evaluates: the members of groups rank, rank + W, ..."""
    return [i for i in range(episodes) if (i // group) % world == rank]


def group_seed(seed: int, group: int, round_: int) -> int:
    return int(np.random.SeedSequence([seed, group, round_]).generate_state(1)[0])


class GroupedController:
    """Plans the episodes of a call in their planning groups: one planner batch per group, the planner
    reseeded from (seed, group, the group's round) first.

    base: a `PlannerController` over this process's episodes (positions 0..n-1); global_ids[p]: the
    problem index of position p. __call__(idx, frames) as `PlannerController`."""

    def __init__(self, base, global_ids: list[int], group: int, seed: int):
        self.base, self.global_ids, self.group, self.seed = base, list(global_ids), group, seed
        self.rounds: dict[int, int] = {}

    def __call__(self, idx: list[int], frames: np.ndarray) -> np.ndarray:
        groups: dict[int, list[int]] = {}
        for j, p in enumerate(idx):
            groups.setdefault(self.global_ids[p] // self.group, []).append(j)
        out = None
        for g, rows in groups.items():
            r = self.rounds.get(g, 0)
            self.rounds[g] = r + 1
            self.base.planner.reseed(group_seed(self.seed, g, r))
            actions = self.base([idx[j] for j in rows], frames[rows])
            out = np.empty((len(idx), *actions.shape[1:]), dtype=actions.dtype) if out is None else out
            out[rows] = actions
        return out


class EpisodeRandomController:
    """The random baseline with one generator per episode (seeded from (seed, problem index)): every env
    step an action drawn uniformly from the action box."""

    def __init__(self, action_space, receding: int, frameskip: int, seed: int, global_ids: list[int]):
        self.low, self.high = np.asarray(action_space.low), np.asarray(action_space.high)
        self.shape = (receding, frameskip, self.low.size)
        self.rngs = [np.random.default_rng([seed, g]) for g in global_ids]

    def __call__(self, idx: list[int], frames: np.ndarray) -> np.ndarray:
        draws = [self.rngs[p].uniform(self.low, self.high, size=self.shape) for p in idx]
        return np.stack(draws).astype(np.float32)


def gather_to_rank0(local: list, world: int) -> list | None:
    """Rank 0: the concatenation of every rank's `local` list (rank order); other ranks: None."""
    if world == 1:
        return list(local)
    rank = dist.get_rank()
    parts = [None] * world if rank == 0 else None
    dist.gather_object(local, parts, dst=0)
    return [x for part in parts for x in part] if rank == 0 else None


def broadcast_from_rank0(obj):
    """Rank 0's `obj` on every rank (identity without a process group)."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def init_from_torchrun() -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); (rank, world)."""
    from lewm_fast.training.distributed import setup

    info = setup("auto")
    return info.rank, info.world_size
