"""Data: episode files in the stable-worldmodel HDF5 layout, collection, and training windows."""

from lewm_fast.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalizer,
    WindowDataset,
    collate_batch,
    prepare_pixels,
    split_episodes,
)
from lewm_fast.data.hdf5 import DataFormatError, open_h5, read_episode, read_index
from lewm_fast.data.writer import DiskFullError, EpisodeWriter

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataFormatError",
    "DiskFullError",
    "EpisodeWriter",
    "Normalizer",
    "WindowDataset",
    "collate_batch",
    "open_h5",
    "prepare_pixels",
    "read_episode",
    "read_index",
    "split_episodes",
]
