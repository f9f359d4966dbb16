"""Datasets with ground-truth boxes for evaluation: VOC/ImageNet XML folders, synthetic scenes, photo collages."""
from .annotations import AnnotationError, Annotation, Box, LabelMap, parse_voc_xml, read_label_file
from .boxes import Sample, VocFolder, model_preprocessing, to_model_input

__all__ = ["Annotation", "AnnotationError", "Box", "LabelMap", "Sample", "VocFolder", "model_preprocessing",
           "parse_voc_xml", "read_label_file", "to_model_input"]
