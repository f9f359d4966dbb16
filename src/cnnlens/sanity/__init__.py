"""Sanity checks for explanations (Adebayo et al., NeurIPS 2018): does a map change when the model's parameters, or the
labels it was trained on, are randomised? A map that survives randomisation explains the image, not the model.

``run_sanity`` runs the cascading / independent / data randomisation tests for several methods; ``write_outputs``
(in ``cnnlens.sanity.report``, needs matplotlib) writes sanity.json, summary.md and the figures;
``model_randomisation_score`` is the per-image score of the full cascade (for ``cnnlens evaluate``).
"""
from __future__ import annotations

from .metric import clear_cache, model_randomisation_score, randomised_copy
from .randomize import Block, cascade, independent, randomisation_blocks
from .runner import DEFAULT_THRESHOLD, MODES, MethodEntry, SanityReport, parse_method, run_sanity, verdict
from .similarity import hog_features, hog_similarity, rank_correlation, similarities, ssim

__all__ = ["Block", "DEFAULT_THRESHOLD", "MODES", "MethodEntry", "SanityReport", "cascade", "clear_cache",
           "hog_features",
           "hog_similarity", "independent", "model_randomisation_score", "parse_method", "randomisation_blocks",
           "randomised_copy", "rank_correlation", "run_sanity", "similarities", "ssim", "verdict"]
