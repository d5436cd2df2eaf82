"""modelloop-optimize: quantization, pruning, distillation, measurement and packaging."""

from modelloop_trainer.optimize.cli import main

__all__ = ["main"]
