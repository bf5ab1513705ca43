"""Pictures of a run for TensorBoard and the run dir: figures (drawing), examples (what a validation epoch keeps),
activation_maps (Grad-CAM), callback (when to draw, where to send)."""
