"""The built-in synthetic fetal-ultrasound corpus (``usssl synth``, and the demo's data).

- ``corpus``: ``generate(out, subjects, seed, ...)`` writes videos, DICOMs, masks and the label,
  speech, gaze and subject tables (layout in docs/architecture.md);
- ``anatomy``: the standard planes' anatomy templates; ``render``: fan geometry, speckle and the
  probe's motion; ``scan``: one subject's scan (frames, narration, gaze); ``write``: MP4 and DICOM
  writers; ``voice``: the narration's text-to-speech (a built-in formant voice, or espeak-ng).

    >>> generate(Path("runs/synth"), subjects=4, seed=0)
"""

from usssl.data.synth.anatomy import PLANES
from usssl.data.synth.corpus import generate
from usssl.data.synth.render import fan_geometry
from usssl.data.synth.scan import render_scan

__all__ = ["PLANES", "generate", "fan_geometry", "render_scan"]
