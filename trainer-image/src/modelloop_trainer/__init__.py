"""modelloop trainer image: fine-tune and compress text classifiers."""

__version__ = "0.1.0"
