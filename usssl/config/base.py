"""The base of every config model (unknown keys and non-finite numbers are errors, values are
validated on assignment) and the bounds that keep a setting meaningful.

A value outside these bounds is almost always a typo (an extra zero, a sign) that would otherwise
run and give a meaningless result (0 training steps, a constant loss, a run that never ends), so
it is refused when the YAML is loaded. The bounds are listed in docs/configuration.md.
"""

from pydantic import BaseModel, ConfigDict

PATH = {"path": True}
"""``json_schema_extra`` of every field that holds a file-system path (or a URI with one): such values
are redacted wherever a config leaves the machine (MLflow params and ``config.yaml``), because
hospital folder names often carry patient names."""
REDACTED = "<redacted path>"
"""What a redacted path field holds in a logged config (a list: one per entry)."""

SEED_MAX = 2**32 - 1
"""Seeds are 0 … 2**32 − 1, the range numpy's and torch's generators accept."""
MAX_EPOCHS = 10_000
"""The most epochs of any training loop (the papers use at most 800)."""
MAX_STEPS = 10_000_000
"""The most optimizer steps of ``pretrain.max_steps`` (-1: no step limit)."""
MAX_BATCH = 65_536
"""The largest batch of any stage."""
MAX_PER_EPOCH = 10_000_000
"""The most items (pairs, clips, samples) drawn per epoch."""
MAX_PIXELS = 4096
"""The largest height or width, in pixels, of a cached frame or a spectrogram."""


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, ``.inf`` and ``.nan`` are refused
    wherever a number is expected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
