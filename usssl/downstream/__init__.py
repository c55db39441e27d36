"""Downstream tasks, as a library (arrays, datasets and models in; scores and files out; no
``output_dir`` layouts): plane detection, saliency, metrics, reports, export, predict, checkpoints.

Names are exported lazily: ``from usssl.downstream import PlaneClassifier, bootstrap_ci``.
"""

from usssl.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # name -> the module that defines it
    "PlaneClassifier": "usssl.downstream.plane_detection",
    "KNNClassifier": "usssl.downstream.plane_detection",
    "fit_linear_probe": "usssl.downstream.plane_detection",
    "fit_knn": "usssl.downstream.plane_detection",
    "predict": "usssl.downstream.plane_detection",
    "extract_features": "usssl.downstream.plane_detection",
    "label_fraction_indices": "usssl.downstream.plane_detection",
    "balanced_loader": "usssl.downstream.plane_detection",
    "classification_scores": "usssl.downstream.metrics",
    "confusion_matrix": "usssl.downstream.metrics",
    "bootstrap_ci": "usssl.downstream.metrics",
    "SaliencyModel": "usssl.downstream.saliency",
    "run_saliency": "usssl.downstream.saliency",
    "saliency_scores": "usssl.downstream.saliency_metrics",
    "kl_div": "usssl.downstream.saliency_metrics",
    "cc": "usssl.downstream.saliency_metrics",
    "nss": "usssl.downstream.saliency_metrics",
    "sim": "usssl.downstream.saliency_metrics",
    "auc_judd": "usssl.downstream.saliency_metrics",
    "markdown_report": "usssl.downstream.report",
    "to_markdown": "usssl.downstream.report",
    "export_model": "usssl.downstream.export",
    "load_exported": "usssl.downstream.export",
    "PreprocessingSpec": "usssl.downstream.export",
    "DISCLAIMER": "usssl.downstream.export",
    "predict_files": "usssl.downstream.predict",
    "prepare_frames": "usssl.downstream.predict",
    "run_models": "usssl.downstream.predict",
    "ContrastiveScorer": "usssl.downstream.contracam",
    "gradcam": "usssl.downstream.contracam",
    "mask_boxes": "usssl.downstream.contracam",
    "save_classifier": "usssl.downstream.checkpoint",
    "load_classifier": "usssl.downstream.checkpoint",
    "save_saliency_model": "usssl.downstream.checkpoint",
    "load_saliency_model": "usssl.downstream.checkpoint",
})
