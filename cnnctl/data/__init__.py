"""A config's images: sources, file listing and decoding, tf.data and NumPy pipelines, splits, data check."""
