"""cnnctl: train convolutional image classifiers from a YAML config."""

import os

# TensorFlow's C++ start-up messages (CUDA probing, oneDNN notes) mean nothing to a cnnctl user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
