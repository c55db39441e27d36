"""Infrastructure every layer may use: the Lightning trainer, MLflow tracking, optimisation,
distributed helpers, atomic file writes and progress bars.

Names are exported lazily: ``from usssl.engine import save_atomic, build_trainer``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "replace_atomic": "usssl.engine.files",
    "write_text_atomic": "usssl.engine.files",
    "write_json_atomic": "usssl.engine.files",
    "save_atomic": "usssl.engine.files",
    "progress": "usssl.engine.progress",
    "gather_with_grad": "usssl.engine.distributed",
    "is_main_process": "usssl.engine.distributed",
    "rank": "usssl.engine.distributed",
    "world_size": "usssl.engine.distributed",
    "launcher_rank": "usssl.engine.distributed",
    "configure_optimization": "usssl.engine.optim",
    "build_optimizer": "usssl.engine.optim",
    "build_trainer": "usssl.engine.trainer",
    "checkpoint_dir": "usssl.engine.trainer",
    "resume_checkpoint": "usssl.engine.trainer",
    "Tracker": "usssl.engine.tracking",
})
