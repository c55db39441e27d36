"""Every random state of a training run, saved with each checkpoint and put back where training
continues, so that a run killed at any moment and resumed is bit-identical to one never stopped.

Lightning's checkpoint holds the weights, the optimizer and the loop counters, not the random
generators. Augmentations (``data/augment.py``, ``methods/order.py``, ``methods/affine.py``) draw from
torch's global generator, and the DataLoader draws its workers' base seed from it at every epoch, so a
resumed run that only re-seeds at start (``seed_everything``) replays other draws from the first
resumed epoch on. ``RandomStateCallback`` stores, in the checkpoint key ``"random_state"``:

- per rank (gathered to the rank that writes the file): Python's ``random``, numpy's global
  generator, torch's CPU generator and, when CUDA is in use, every CUDA device's generator;
- the ``torch.Generator`` of each training DataLoader and of its sampler, when they have one.

Worker processes are not saved: they are restarted every epoch (``persistent_workers`` off) and seeded
from the base seed the main process draws when the epoch's iterator is made (Lightning's
``pl_worker_init_function``), and usssl's datasets draw each item from ``(seed, epoch, index)``.

Where the state goes back matters. Lightning makes the first iterator of a resumed run before any
hook runs, from a fresh dataset whose ``epoch`` is still 0 (already copied into workers), and from a
generator that is not the one the uninterrupted run had there. So the restore waits for
``on_train_epoch_start`` of the first resumed epoch — after ``EpochSeedCallback`` has set the
dataset's epoch — puts every generator back, and makes the epoch's iterator again, which is exactly
what the uninterrupted run does at that point. Checkpoints are written at epoch ends only (the loaders
are not stateful, so a mid-epoch position could not be restored).

    >>> trainer = L.Trainer(callbacks=[EpochSeedCallback(), RandomStateCallback(), ModelCheckpoint(...)])
    >>> trainer.fit(module, loader, ckpt_path="checkpoints/pretrain/last.ckpt")   # continues exactly
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "random_state"
FORMAT = 1


def capture_rng() -> dict[str, Any]:
    """This process's global random states: Python, numpy, torch CPU and (when initialised) CUDA.

    Everything is a tensor, an int, a str or a tuple of them, so ``torch.load(weights_only=True)``
    reads it back.
    """
    np_state = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key", "pos"}, ...}
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),  # (624,)
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # never initialise CUDA just to save
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the states :func:`capture_rng` returned (CUDA's only when the device count matches)."""
    random.setstate(state["python"])
    npy = state["numpy"]
    np.random.set_state({
        "bit_generator": npy["bit_generator"],
        "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
        "has_gauss": npy["has_gauss"],
        "gauss": npy["gauss"],
    })
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("the checkpoint holds %d CUDA generator states but this process sees %d devices; "
                        "CUDA draws will differ from the uninterrupted run", len(cuda),
                        torch.cuda.device_count() if torch.cuda.is_available() else 0)


def loader_generators(loaders: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects of DataLoaders (their own, their sampler's, their batch
    sampler's sampler), in a fixed order, each once; ``loaders`` is a DataLoader, a list / dict of
    them, or None."""
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    elif not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    found: list[torch.Generator] = []
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
            gen = getattr(owner, "generator", None)
            if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
                found.append(gen)
    return found


def _gather_ranks(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state`` (rank order); one entry outside distributed training."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, state)  # every rank dumps the checkpoint; rank 0 writes it
    return out


class RandomStateCallback(Callback):
    """Saves every random state with each checkpoint and restores it where a resumed run continues.

    See the module docstring for what is saved and why the restore waits for the first resumed
    epoch's start. Put it after ``EpochSeedCallback``: the dataset's epoch must be set before the
    iterator is made again.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        generators = [g.get_state() for g in loader_generators(trainer.train_dataloader)]
        checkpoint[CHECKPOINT_KEY] = {
            "format": FORMAT,
            "ranks": _gather_ranks({"rng": capture_rng(), "loader_generators": generators}),
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.pending = checkpoint.get(CHECKPOINT_KEY)
        if self.pending is None:
            log.warning("the checkpoint holds no random state (written by an older usssl): the resumed "
                        "run continues with other random draws than the uninterrupted one would")

    def on_train_start(self, trainer, pl_module) -> None:
        if self.pending is not None and trainer.fit_loop.restarted_mid_epoch:
            # no epoch start follows: restore here; the batches already seen this epoch come again
            log.warning("resuming from a mid-epoch checkpoint: the DataLoader cannot continue where it "
                        "stopped, so this run will not reproduce the uninterrupted one")
            self.restore(trainer, remake_iterator=False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.pending is not None:
            self.restore(trainer, remake_iterator=True)

    def restore(self, trainer, remake_iterator: bool) -> None:
        """Put back this rank's saved states (and the loaders' generators); then, at an epoch's
        start, make the epoch's iterator again from them."""
        saved, self.pending = self.pending, None
        ranks = saved["ranks"]
        if len(ranks) != trainer.world_size:
            log.warning("the checkpoint was written by %d ranks, this run has %d: random draws will differ",
                        len(ranks), trainer.world_size)
        mine = ranks[trainer.global_rank % len(ranks)]
        restore_rng(mine["rng"])
        generators = loader_generators(trainer.train_dataloader)
        if len(generators) != len(mine["loader_generators"]):
            log.warning("the checkpoint holds %d DataLoader generators, the loader has %d: sampling will "
                        "differ", len(mine["loader_generators"]), len(generators))
        for gen, gen_state in zip(generators, mine["loader_generators"]):
            gen.set_state(gen_state)
        if remake_iterator:
            remake_epoch_iterator(trainer)


def remake_epoch_iterator(trainer) -> None:
    """Make the training epoch's DataLoader iterator again, from the generators as they are now.

    Lightning made the first iterator of a resumed run in ``FitLoop.setup_data``, before any hook;
    the uninterrupted run makes each epoch's iterator after ``on_train_epoch_start``. This is that
    step, taken again (it reaches into Lightning's fit loop: ``tests/engine/test_resume.py`` fails
    if a Lightning release moves it).
    """
    fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
    if fetcher is None:
        raise RuntimeError("Lightning's fit loop has no _data_fetcher: usssl.engine.rng cannot restart "
                           "the resumed epoch's iterator with this Lightning version")
    iter(fetcher)
