"""Faithfulness and localisation metrics (metrics.md): batched, torch only, per-sample values.

Registry: :data:`METRICS` (name → :class:`MetricSpec` with ``higher_is_better``); functions:
``confidence_pair`` + ``average_drop`` / ``increase_in_confidence`` / ``average_drop_rcam`` /
``average_increase_rcam``; ``perturbation_curves`` / ``deletion_insertion`` / ``auc``; ``pointing_game``,
``energy_pointing_game``, ``bbox_score``, ``iou`` (+ ``binarize``, ``boxes_mask``); ``summarize``.
"""
from .aggregate import mean_se, summarize
from .base import METRICS, MetricError, MetricSpec, all_metrics, get_metric, resolve_metrics
from .confidence import (average_drop, average_drop_rcam, average_increase_rcam, confidence_pair,
                         increase_in_confidence, rcam_mask)
from .localization import (bbox_score, binarize, box_iou, boxes_mask, centre_points, energy_pointing_game, iou,
                           largest_component_boxes, otsu_thresholds, pointing_game, pointing_points, voc_to_box)
from .perturbation import auc, blur, deletion_insertion, gaussian_kernel, perturbation_curves, pixel_ranks
from .saliency import constant_maps, saliency
from .scoring import batched_scores, class_scores, mask_input

__all__ = ["METRICS", "MetricError", "MetricSpec", "all_metrics", "auc", "average_drop", "average_drop_rcam",
           "average_increase_rcam", "batched_scores", "bbox_score", "binarize", "blur", "box_iou", "boxes_mask",
           "centre_points", "class_scores", "confidence_pair", "constant_maps", "deletion_insertion",
           "energy_pointing_game", "gaussian_kernel", "get_metric", "increase_in_confidence", "iou",
           "largest_component_boxes", "mask_input", "mean_se", "otsu_thresholds", "perturbation_curves",
           "pixel_ranks", "pointing_game", "pointing_points", "rcam_mask", "resolve_metrics", "saliency",
           "summarize", "voc_to_box"]
