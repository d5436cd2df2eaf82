"""modelloop server image: TorchServe handler, metrics and entrypoint."""
