"""Import Keras once, quietly: `from cnnctl.backend import keras`.

TensorFlow 2.21 prints C++ start-up notes (oneDNN, CUDA probing) to stderr before its own
log-level setting is read, so stderr is muted while the backend loads and finds its devices.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Mute file descriptor 2 (C++ libraries' log lines) for the duration; Python exceptions
    still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with quiet_stderr():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing logs here, not at the first op

__all__ = ["keras", "quiet_stderr"]
