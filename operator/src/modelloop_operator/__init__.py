"""modelloop operator: reconciles TrainingJob, OptimizationJob and ModelDeployment resources."""
