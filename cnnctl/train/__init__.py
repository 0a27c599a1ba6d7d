"""Training a model: optimizer, schedule and loss, callbacks, checkpoints and resume, distribution."""
