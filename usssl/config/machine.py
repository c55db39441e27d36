"""Does this machine have the accelerator and devices that ``trainer:`` asks for?

Checked when a config is loaded **for running** (``usssl run``), never by ``usssl validate``: a YAML
written for a GPU cluster is valid on a laptop. torch is imported inside :func:`check_machine`
only, so ``usssl --help`` and ``usssl validate`` stay light.

    >>> check_machine(cfg.trainer, "pipelines/demo.yaml")
    'cpu: 1 process(es) of 2 CPU core(s)'
"""

from __future__ import annotations

import os

from usssl.errors import ConfigError

FIX = "; set trainer.accelerator: cpu (or --set trainer.accelerator=cpu), or run on a machine that has one"


def requested_devices(devices: int | str | list[int]) -> tuple[int | None, list[int] | None]:
    """(count, indices) of ``trainer.devices``: count None means every device; indices None when a
    count was given. ``"0,1"`` and ``[0, 1]`` are indices; ``2`` and ``"2"`` are counts."""
    if isinstance(devices, list):
        return len(devices), list(devices)
    text = str(devices).strip().replace(" ", "")
    if text in ("auto", "-1"):
        return None, None
    if "," in text:
        indices = [int(t) for t in text.split(",") if t]
        return len(indices), indices
    return int(text), None


def check_machine(trainer, source: str | None = None) -> str:
    """Check ``trainer.accelerator`` and ``trainer.devices`` against this machine; returns a one-line
    description of what the run will use.

    Raises:
        ConfigError: the accelerator is missing (``gpu`` without a usable CUDA GPU, ``mps`` off a
            recent Mac), or fewer devices exist than asked for; the message says what was found.
    """
    import torch

    prefix = f"{source}: " if source else ""
    accelerator = trainer.accelerator
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if accelerator == "auto":
        accelerator = "gpu" if n_gpu else "mps" if mps else "cpu"
    count, indices = requested_devices(trainer.devices)
    if accelerator in ("gpu", "cuda"):
        if n_gpu == 0:
            build = " (this torch was built without CUDA)" if torch.version.cuda is None else ""
            raise ConfigError(f"{prefix}trainer.accelerator: {trainer.accelerator!r}, but this machine has no usable "
                              f"CUDA GPU{build}{FIX}; `usssl doctor` shows what usssl sees")
        missing = [i for i in indices or [] if i >= n_gpu]
        if (count or 0) > n_gpu or missing:
            asked = f"GPU(s) {missing}" if missing else f"{count} GPUs"
            raise ConfigError(f"{prefix}trainer.devices: {trainer.devices!r} asks for {asked}, but this machine has "
                              f"{n_gpu} (indices 0 … {n_gpu - 1}); set trainer.devices to at most {n_gpu}")
        return f"gpu: {count or n_gpu} of {n_gpu} GPU(s) ({torch.cuda.get_device_name(0)})"
    if accelerator == "mps":
        if not mps:
            raise ConfigError(f"{prefix}trainer.accelerator: 'mps', but Apple's Metal GPU is not available here{FIX}")
        if (count or 1) > 1 or indices not in (None, [0]):
            raise ConfigError(f"{prefix}trainer.devices: {trainer.devices!r}, but MPS has one device; set "
                              "trainer.devices: 1")
        return "mps: 1 device"
    cores = os.cpu_count() or 1
    if indices is not None:
        raise ConfigError(f"{prefix}trainer.devices: {trainer.devices!r} lists device indices, but on the CPU "
                          "devices is a number of processes; give a number, e.g. trainer.devices: 1")
    if (count or 1) > cores:
        raise ConfigError(f"{prefix}trainer.devices: {count} processes on the CPU, but this machine has {cores} "
                          f"core(s); set trainer.devices to at most {cores}")
    return f"cpu: {count or 1} process(es) of {cores} CPU core(s)"
