"""The LRP engine (lrp_sglrp_clrp.md §1-3): relevance for any traceable CNN, at any set of layers, from any initial
relevance, in one forward and one relevance pass.

>>> from cnnlens.lrp import lrp_attribute, COMPOSITES
>>> res = lrp_attribute(model, x, lambda z: z * F.one_hot(z.argmax(1), z.shape[1]), "epsilon-plus", ["layer4"])
>>> res.input.shape, res.relevance["layer4"].shape, res.activations["layer4"].shape
"""
from __future__ import annotations

from .composites import COMPOSITES, Composite, composite_options, default_bounds, get_composite
from .engine import LRPResult, lrp_attribute
from .graph import clear_cache, get_plan
from .rules import (AlphaBeta, Epsilon, Flat, Gamma, LinearRule, Norm, Pass, Rule, Stabilizer, WSquare, ZBox,
                    ZPlus)

__all__ = ["COMPOSITES", "AlphaBeta", "Composite", "Epsilon", "Flat", "Gamma", "LRPResult", "LinearRule", "Norm",
           "Pass", "Rule", "Stabilizer", "WSquare", "ZBox", "ZPlus", "clear_cache", "composite_options",
           "default_bounds", "get_composite", "get_plan", "lrp_attribute"]
