"""The input side of cnnlens: pictures and datasets.

- :mod:`.images`: load a picture (path, PIL image, array, sample name) as RGB or as model input; decode image files.
- :mod:`.sample`: :class:`Sample`, one image with its boxes and the classes to explain.
- :mod:`.preprocessing`: the model's input size, mean and std (:func:`model_preprocessing`, :func:`to_model_input`).
- :mod:`.annotations`: Pascal VOC / ILSVRC XML boxes and label files.
- :mod:`.layouts`: dataset layouts on disk (folder, imagefolder, csv, imagenet-loc, coco, voc) behind
  :func:`open_dataset`, and class maps.
- :mod:`.synthetic`, :mod:`.collage`: generated datasets with known boxes (synthetic scenes, photo collages).

Nothing here imports the evaluation, the metrics or the CLI: they import this package.
"""
from .annotations import AnnotationError, Annotation, Box, LabelMap, parse_voc_xml, read_label_file
from .layouts import FORMATS, ClassMap, Entry, ImageDataset, VocFolder, detect_format, open_dataset, read_class_map
from .preprocessing import model_preprocessing, to_model_input
from .sample import Sample

__all__ = ["FORMATS", "Annotation", "AnnotationError", "Box", "ClassMap", "Entry", "ImageDataset", "LabelMap",
           "Sample", "VocFolder", "detect_format", "model_preprocessing", "open_dataset", "parse_voc_xml",
           "read_class_map", "read_label_file", "to_model_input"]
