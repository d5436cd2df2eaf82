"""TorchServe entry file for modelloop's text classifiers.

`modelloop-optimize` packages this file into every `.mar` (torch-model-archiver `--handler`),
and TorchServe imports it from the extracted archive as a top-level module. It stays a thin
shim over the installed `modelloop_server` package so that the logic lives in one tested
place and an archive never carries its own copy of it. TorchServe instantiates the one class
defined here, once per worker.
"""

from modelloop_server.service import TextClassificationHandler


class ModelloopHandler(TextClassificationHandler):
    """The class TorchServe instantiates (it must be defined in this file)."""
