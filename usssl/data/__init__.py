"""Data: ingest into the cache, the cache and its splits, datasets and augmentation, the synthetic corpus.

Names are exported lazily (importing ``usssl.data`` imports nothing heavy until a name is used):
``from usssl.data import Cache, ingest, FrameDataset``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "Cache": "usssl.data.cache",
    "ShardWriter": "usssl.data.cache",
    "ingest": "usssl.data.ingest",
    "merge_parts": "usssl.data.ingest",
    "find_recordings": "usssl.data.ingest",
    "IngestSummary": "usssl.data.ingest",
    "imaging_geometry": "usssl.data.frames",
    "resampled_blocks": "usssl.data.frames",
    "kept_frames": "usssl.data.frames",
    "grey": "usssl.data.frames",
    "ImagingGeometry": "usssl.data.frames",
    "cache_fold": "usssl.data.splits",
    "cache_folds": "usssl.data.splits",
    "shards_of": "usssl.data.splits",
    "require_split": "usssl.data.splits",
    "check_disjoint": "usssl.data.splits",
    "BACKGROUND": "usssl.data.splits",
    "AudioVisualDataset": "usssl.data.datasets",
    "FrameDataset": "usssl.data.datasets",
    "ClipDataset": "usssl.data.clips",
    "ClipPairDataset": "usssl.data.clips",
    "clip_indices": "usssl.data.clips",
    "anchored_clip_indices": "usssl.data.clips",
    "ClipAugment": "usssl.data.augment",
    "ContrastiveClipAugment": "usssl.data.augment",
    "warp_clips": "usssl.data.augment",
    "SaliencyDataset": "usssl.data.saliency",
    "fixation_map": "usssl.data.fixations",
    "gaze_fixations": "usssl.data.fixations",
    "sigma_from_visual_angle": "usssl.data.fixations",
    "data_card": "usssl.data.datacard",
    "write_data_card": "usssl.data.datacard",
    "generate": "usssl.data.synth",
})
