"""What a run needs around the model: building the trainer, its files, checkpoints, resuming, cross-validation."""
