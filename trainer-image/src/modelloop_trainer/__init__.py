"""modelloop trainer image: fine-tune and compress text classifiers."""
