"""Training windows from an episode file, as the public LeWM trainer samples them.

A window starts at any row s of an episode with s + T*frameskip <= L (T = num_frames + 1 = 4,
frameskip = 5, so 20 rows): frames at rows s, s+5, s+10, s+15 and the 20 actions of rows s..s+19
regrouped into T blocks of frameskip x action_dim (block k = the actions from frame k to frame k+1).

Per item (batched through `__getitems__`, so a DataLoader fetches a whole batch with one fancy index):
    pixels  float32 (B, T, C, S, S): resized to the model's image size, ImageNet-normalised
    action  float32 (B, T, frameskip*action_dim): z-scored per action column (NaN -> 0 afterwards)
Episodes are split into train/val by a seeded permutation; the action statistics come from the train
episodes and travel with the checkpoint (`normalization.json`) so that planning can un-normalise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lewm_fast._io import read_json
from lewm_fast.config import LeWMConfig
from lewm_fast.data.hdf5 import DataFormatError, _h5py, check_actions, check_pixels, open_h5, read_index, read_rows

if TYPE_CHECKING:
    import h5py

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Reading windows from the file (in_memory=False): HDF5's chunk cache per open handle. Windows overlap (stride
# 1), so frames are read again soon; 256 MiB is the public HDF5Dataset's setting (a prime number of slots).
READ_CACHE_BYTES = 256 * 2**20
READ_CACHE_SLOTS = 100_003


@dataclass
class Normalizer:
    """Per-column z-scoring of actions: a_norm = (a - mean) / std; mean, std are (action_dim,)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, actions: np.ndarray) -> Normalizer:
        """From actions (N, action_dim); rows with NaN (episode ends) are ignored."""
        ok = np.isfinite(actions).all(axis=1)
        if not ok.any():
            raise DataFormatError("data: column 'action' has no finite row to compute statistics from")
        a = actions[ok].astype(np.float64)
        return cls(a.mean(0).astype(np.float32), np.maximum(a.std(0), 1e-6).astype(np.float32))

    def normalize(self, blocks: torch.Tensor) -> torch.Tensor:
        """(..., frameskip*action_dim) env actions -> z-scored (the stats tile over the block)."""
        reps = blocks.shape[-1] // self.mean.size
        mean = torch.as_tensor(np.tile(self.mean, reps), device=blocks.device, dtype=blocks.dtype)
        std = torch.as_tensor(np.tile(self.std, reps), device=blocks.device, dtype=blocks.dtype)
        return (blocks - mean) / std

    def denormalize(self, blocks: torch.Tensor) -> torch.Tensor:
        """(..., frameskip*action_dim) z-scored -> env actions."""
        reps = blocks.shape[-1] // self.mean.size
        mean = torch.as_tensor(np.tile(self.mean, reps), device=blocks.device, dtype=blocks.dtype)
        std = torch.as_tensor(np.tile(self.std, reps), device=blocks.device, dtype=blocks.dtype)
        return blocks * std + mean

    def to_dict(self) -> dict:
        return {"action_mean": self.mean.tolist(), "action_std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """From {"action_mean": [...], "action_std": [...]}: equal lengths, finite, std > 0 (checked)."""
        values = []
        for key in ("action_mean", "action_std"):
            v = d.get(key) if isinstance(d, dict) else None
            ok = isinstance(v, list) and len(v) > 0
            ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)
            if not ok:
                raise ValueError(f"{key}: expected a non-empty list of finite numbers, got {v!r}")
            values.append(np.asarray(v, dtype=np.float32))
        mean, std = values
        if mean.shape != std.shape or (std <= 0).any():
            raise ValueError(f"action_std: expected {mean.size} positive numbers (one per action_mean entry), "
                             f"got {std.tolist()}")  # fmt: skip
        return cls(mean, std)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normalizer:
        """From a normalization.json; errors name the file and the field."""
        try:
            return cls.from_dict(read_json(path))
        except ValueError as e:
            raise type(e)(e if str(e).startswith(str(path)) else f"{path}: {e}") from e


def prepare_pixels(frames: torch.Tensor, image_size: int, shared: bool = False) -> torch.Tensor:
    """uint8 (..., H, W, C) frames -> float32 (..., C, image_size, image_size), ImageNet-normalised:
    (x / 255 - mean) / std, resized (bilinear, antialiased) when the frames are not image_size.

    Written for memory traffic (the cost at 224 px: a batch of 64 windows is 154 MB of floats): one output
    buffer, filled by one uint8 -> float copy that also transposes HWC -> CHW, then normalised in place;
    the same operations in the same order as the plain formula, so the values are identical. shared=True
    allocates the output in shared memory, so that a DataLoader worker hands it over without a copy."""
    lead, (h, w, c) = frames.shape[:-3], frames.shape[-3:]
    x = frames.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN[:c] if c == 3 else (0.5,)).view(1, c, 1, 1)
    std = torch.tensor(IMAGENET_STD[:c] if c == 3 else (0.5,)).view(1, c, 1, 1)
    if (h, w) == (image_size, image_size):
        out = torch.empty((x.shape[0], c, h, w), dtype=torch.float32)
        out = out.share_memory_() if shared else out
        out.copy_(x).div_(255.0)
    else:
        out = F.interpolate(x.float().div_(255.0), size=(image_size, image_size), mode="bilinear", antialias=True,
                            align_corners=False).contiguous()  # fmt: skip
        out = out.share_memory_() if shared else out
    out.sub_(mean).div_(std)
    return out.view(*lead, c, image_size, image_size)


def prepare_pixels_reference(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """The plain formula `prepare_pixels` computes (its specification; the tests compare the two)."""
    lead, c = frames.shape[:-3], frames.shape[-1]
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN[:c] if c == 3 else (0.5,)).view(1, c, 1, 1)
    std = torch.tensor(IMAGENET_STD[:c] if c == 3 else (0.5,)).view(1, c, 1, 1)
    return ((x - mean) / std).reshape(*lead, c, image_size, image_size)


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) episode indices: a seeded permutation; val gets round(val_fraction * E), at least one
    episode when val_fraction > 0 and there are two or more episodes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(num_episodes)
    n_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = max(n_val, 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class WindowDataset(torch.utils.data.Dataset):
    """Windows of T frames with frameskip from chosen episodes of an HDF5 episode file.

    Args:
        path: the `.h5` file (stable-worldmodel layout; columns `pixels` and `action` are required).
        image_size: model image size S (frames are resized to S x S).
        num_frames: T frames per window (num_frames + 1 of the model = 4). frameskip: 5.
        episodes: which episodes to use (default: all).
        normalizer: action statistics (default: fitted on these episodes).
        in_memory: load the frames into RAM once (fast); False: read each batch's frames from the file (one
            file handle per DataLoader worker); None (default): in memory when the frames take at most 4 GiB.
            Actions are always held in RAM (N x action_dim floats).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_size: int,
        num_frames: int = 4,
        frameskip: int = LeWMConfig.frameskip,
        episodes: np.ndarray | None = None,
        normalizer: Normalizer | None = None,
        in_memory: bool | None = None,
    ):
        self.path, self.image_size, self.num_frames, self.frameskip = Path(path), image_size, num_frames, frameskip
        self.span = num_frames * frameskip
        with open_h5(self.path) as f:
            lengths, offsets = read_index(f, ("pixels", "action"))
            self.frame_shape = check_pixels(f)
            if f["action"].ndim != 2:
                raise DataFormatError(f"data: {self.path.name}: column 'action' must be (N, action_dim), "
                                      f"got shape {f['action'].shape}")  # fmt: skip
            self.action_dim = int(f["action"].shape[1])
            episodes = np.arange(lengths.size) if episodes is None else np.asarray(episodes, dtype=np.int64)
            self.episodes = episodes
            if lengths.size == 0:
                raise DataFormatError(f"data: {self.path.name} holds no episode")
            use = episodes[lengths[episodes] >= self.span]
            self.skipped = int(episodes.size - use.size)
            if use.size == 0:
                raise DataFormatError(
                    f"data: every episode of {self.path.name} (among the {episodes.size} used) is shorter than a "
                    f"training window of {num_frames} frames x frameskip {frameskip} = {self.span} steps "
                    f"(longest: {int(lengths[episodes].max()) if episodes.size else 0})"
                )
            # Flat start rows of every window (stride 1, like the public dataset).
            starts = [offsets[e] + np.arange(lengths[e] - self.span + 1) for e in use]
            self.starts = np.concatenate(starts).astype(np.int64)
            rows = np.concatenate([offsets[e] + np.arange(lengths[e]) for e in use])
            actions = read_rows(f, "action").astype(np.float32)  # (N, A): small next to the frames
            check_actions(self.path.name, actions, lengths[use], offsets[use])
            self.normalizer = normalizer or Normalizer.fit(actions[rows])
            if in_memory is None:
                in_memory = f["pixels"].size * f["pixels"].dtype.itemsize <= 4 * 2**30
            self.in_memory = in_memory
            self.pixels = read_rows(f, "pixels") if in_memory else None
            self.actions = actions  # always in RAM: N x action_dim floats (the public "cached" action column)
        self._h5: h5py.File | None = None

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getstate__(self) -> dict:  # DataLoader workers open their own handle
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    def _frames(self, starts: np.ndarray) -> np.ndarray:
        """uint8 (B, T, H, W, C): the frames of the windows starting at rows `starts` (B,)."""
        rows = starts[:, None] + self.frameskip * np.arange(self.num_frames)[None, :]
        if self.in_memory:
            return self.pixels[rows]
        if self._h5 is None:  # one handle per process; a chunk cache for the overlapping windows
            self._h5 = _h5py().File(self.path, "r", rdcc_nbytes=READ_CACHE_BYTES, rdcc_nslots=READ_CACHE_SLOTS)
        ds = self._h5["pixels"]
        out = np.empty((*rows.shape, *self.frame_shape), dtype=np.uint8)
        # One read per frame, straight into `out`. (A strided slice per window, ds[s : s + 16 : 5], reads the
        # same frames but is orders of magnitude slower in h5py.)
        try:
            for (b, t), row in np.ndenumerate(rows):
                ds.read_direct(out, np.s_[row], np.s_[b, t])
        except OSError as e:
            raise DataFormatError(f"data: {self.path.name}: cannot read column 'pixels' (the file is damaged: "
                                  f"{str(e).strip() or type(e).__name__})") from e  # fmt: skip
        return out

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        s = self.starts[np.asarray(indices, dtype=np.int64)]
        in_worker = torch.utils.data.get_worker_info() is not None
        pixels = prepare_pixels(torch.from_numpy(self._frames(s)), self.image_size, shared=in_worker)
        action_rows = s[:, None] + np.arange(self.span)[None, :]
        actions = torch.from_numpy(self.actions[action_rows])
        actions = actions.reshape(len(s), self.num_frames, self.frameskip * self.action_dim)
        actions = torch.nan_to_num(self.normalizer.normalize(actions), nan=0.0)
        return {"pixels": pixels, "action": actions}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def collate_batch(batch):
    """DataLoader collate for `__getitems__` output (already a batch dict) or a list of items."""
    if isinstance(batch, dict):
        return batch
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
