"""Monitoring decisions, pure: which PromQL to ask (:mod:`.builtin_checks`), what the
answers mean (:mod:`.analysis`) and whether to retrain (:mod:`.retrain_policy`)."""
