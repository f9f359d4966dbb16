"""Datasets with ground-truth boxes for evaluation: VOC/ImageNet XML folders, synthetic scenes, photo collages."""
from .annotations import AnnotationError, Annotation, Box, LabelMap, parse_voc_xml, read_label_file
from .boxes import Sample, model_preprocessing, to_model_input

__all__ = ["Annotation", "AnnotationError", "Box", "LabelMap", "Sample", "VocFolder", "model_preprocessing",
           "parse_voc_xml", "read_label_file", "to_model_input"]


def __getattr__(name: str):
    # VocFolder lives in cnnlens.evaluation.datasets.voc; imported on first use so ``import cnnlens.data`` stays light.
    if name == "VocFolder":
        from ..evaluation.datasets.voc import VocFolder
        return VocFolder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
