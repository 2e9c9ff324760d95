"""Roll out a policy in an environment and write the episodes to HDF5, one episode at a time.

Episode i is a function of (seed, i) only: the environment and the policy are reseeded from
SeedSequence([seed, i]) at its start, so a run that was interrupted and resumed writes exactly the
episodes an uninterrupted run writes.

Bounded before it starts: one episode's frames must fit in memory (they are held until the episode is
written), and the episodes still to write must fit on the output's disk (an upper bound: every episode
runs to max_steps); either refusal names the flag and the estimate, and nothing is written. Progress is
shown per environment step. How writing survives a full disk or a kill: lewm_fast/data/writer.py.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from lewm_fast._checks import SEED_MAX, check_choice, check_int
from lewm_fast._io import check_output_file
from lewm_fast._memory import check_fits, gib
from lewm_fast._version import __version__
from lewm_fast.data.hdf5 import MIN_FRAME
from lewm_fast.data.writer import EpisodeWriter, episode_bytes, file_size_limit
from lewm_fast.envs import DEFAULT_POLICY, ENVS, POLICIES, make_env, make_policy

# The largest frame side collected: 1024 px x 101 frames is ~320 MB per episode in memory; a larger value
# is a typo more likely than a wish (100000 px would ask for 30 GB per frame).
MAX_IMAGE_SIZE = 1024


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """(environment seed, policy seed) of episode `index`."""
    a, b = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(a), int(b)


def rollout(env, policy, env_seed: int, policy_seed: int, max_steps: int, on_step=None) -> dict[str, np.ndarray]:
    """One episode as columns: pixels (L, S, S, 3) uint8, action (L, A) float32 (NaN on the last row:
    no action is taken from the final observation), state (L, state_dim) float32, proprio (L, P) float32
    (the env's `proprio_of(states)` where it has one, else the first two state values: the agent's xy in
    TwoRoom and PushT, the joint angles in Reacher).
    Row t holds observation t and the action taken from it. on_step(): called after every env step."""
    state, _ = env.reset(seed=env_seed)
    policy.reset(policy_seed)
    pixels, actions, states = [env.render()], [], [np.asarray(state, dtype=np.float32)]
    for _ in range(max_steps):
        action = np.asarray(policy(state), dtype=np.float32)
        state, _, terminated, truncated, _ = env.step(action)
        actions.append(action)
        pixels.append(env.render())
        states.append(np.asarray(state, dtype=np.float32))
        if on_step is not None:
            on_step()
        if terminated or truncated:
            break
    actions.append(np.full_like(actions[0], np.nan))
    states = np.stack(states)
    proprio = env.proprio_of(states) if hasattr(env, "proprio_of") else states[:, :2]
    return {
        "pixels": np.stack(pixels),
        "action": np.stack(actions).astype(np.float32),
        "state": states,
        "proprio": np.array(proprio, dtype=np.float32),
    }


def check_collect(env_name, out, episodes, image_size, policy, max_steps, seed, resume=False, overwrite=False,
                  name=str) -> None:  # fmt: skip
    """Every argument of `collect` (named by `name(arg)`: the CLI passes its flags), before anything runs."""
    check_choice(name("env"), env_name, ENVS)
    check_int(name("episodes"), episodes, lo=1)
    check_int(name("image_size"), image_size, lo=MIN_FRAME, hi=MAX_IMAGE_SIZE)
    if policy is not None:
        check_choice(name("policy"), policy, POLICIES[env_name])
    check_int(name("max_steps"), max_steps, lo=1)
    check_int(name("seed"), seed, lo=0, hi=SEED_MAX)
    if resume and overwrite:
        raise ValueError(f"{name('resume')}, {name('overwrite')}: expected one of them, got both")
    check_output_file(name("out"), out)
    # An episode's frames are held until it is written, twice over while they are stacked.
    frames = 2 * (max_steps + 1) * image_size * image_size * 3
    check_fits(name("max_steps"), frames, "cpu", f"an episode of {max_steps} steps at {image_size} px",
               "collect shorter episodes (more of them)")  # fmt: skip


def collect(
    env_name: str,
    out: str | os.PathLike,
    episodes: int,
    image_size: int = 64,
    policy: str | None = None,
    seed: int = 0,
    max_steps: int = 100,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write `episodes` episodes to `out` (continuing it with resume=True). Returns a summary dict.

    Refused before anything is written: bad arguments, an existing `out` without resume/overwrite, a file
    that cannot be continued, episodes that cannot fit in memory or on the disk. A disk that fills up
    during the run anyway (another writer) stops it at an episode boundary (`DiskFullError`)."""
    check_collect(env_name, out, episodes, image_size, policy, max_steps, seed, resume, overwrite)

    policy = policy or DEFAULT_POLICY.get(env_name)
    env_kw = {"image_size": image_size, "max_episode_steps": max_steps}
    if env_name == "tworoom":
        env_kw["terminate_on_success"] = False  # the data policy retargets; episodes run to max_steps
    env = make_env(env_name, **env_kw)
    attrs = {"env": env_name, "image_size": image_size, "policy": policy, "seed": seed, "max_steps": max_steps,
             "writer": f"lewm_fast {__version__}"}  # fmt: skip
    try:
        pol = make_policy(env_name, env, policy)
        return _write(env, pol, env_name, out, episodes, seed, max_steps, resume, overwrite, progress, attrs)
    finally:
        env.close()  # MuJoCo envs release their GL contexts here rather than at interpreter exit


def check_room(out: Path, todo: int, one_episode: dict[str, np.ndarray], max_steps: int, chunk_rows: int) -> None:
    """The `todo` episodes still to write fit on out's disk and under the file-size limit (upper bound:
    each runs to max_steps, with the columns of `one_episode`); else refuse, naming the estimate."""
    rows = {c: np.broadcast_to(v[:1], (max_steps + 1, *v.shape[1:])) for c, v in one_episode.items()}
    need = todo * episode_bytes(rows, chunk_rows)
    where = out if out.exists() else out.parent
    while not where.exists():
        where = where.parent
    free, limit = shutil.disk_usage(where).free, file_size_limit()
    have = out.stat().st_size if out.exists() else 0
    if need > free or (limit is not None and have + need > limit):
        room = f"{gib(free)} free on its disk" + (f", a file-size limit of {gib(limit)}" if limit is not None else "")
        raise ValueError(f"out: {todo} more episode(s) of up to {max_steps} steps need up to {gib(need)} in {out} "
                         f"({room}); collect fewer --episodes or shorter --max-steps, or make room")  # fmt: skip


def _write(env, pol, env_name, out, episodes, seed, max_steps, resume, overwrite, progress, attrs) -> dict:
    from tqdm import tqdm

    t0, out = time.perf_counter(), Path(out)
    with EpisodeWriter(out, resume=resume, overwrite=overwrite, attrs=attrs) as writer:
        done = writer.num_episodes
        if done > episodes:
            raise ValueError(f"episodes: {out} already holds {done} episodes, more than the {episodes} asked for")
        if done < episodes:  # the columns' widths, from a one-step episode (every episode is reseeded anyway)
            check_room(out, episodes - done, rollout(env, pol, *episode_seeds(seed, done), 1), max_steps,
                       writer.chunk_rows)  # fmt: skip
        steps = 0
        bar = tqdm(total=episodes * max_steps, initial=done * max_steps, desc=f"collect {env_name}", unit="step",
                   disable=not progress)  # fmt: skip
        for i in range(done, episodes):
            ep = rollout(env, pol, *episode_seeds(seed, i), max_steps, on_step=lambda: bar.update(1))
            writer.write_episode(ep)
            steps += len(ep["action"])
            bar.update((i + 1) * max_steps - bar.n)  # an episode that ended early
            bar.set_postfix(episodes=f"{i + 1}/{episodes}")
        bar.close()
        total_eps, total_rows = writer.num_episodes, writer.num_rows
    seconds = time.perf_counter() - t0
    return {"out": str(out), "episodes": total_eps, "rows": total_rows, "new_rows": steps, "seconds": seconds,
            "frames_per_s": steps / seconds if seconds > 0 else float("nan")}  # fmt: skip
