"""Benchmarks of cnnctl side by side with plain Keras and PyTorch: `python bench/run.py`.

The harness (`run.py`, `mnist_cnn.py`, `folder_input.py`, `machine.py`, `process.py`,
`report.py`) imports neither TensorFlow nor a Keras backend, so that it also runs where only
JAX or PyTorch is installed. The contenders are standalone scripts (`plain_keras.py`,
`plain_torch.py`, `folder_pipeline.py`) and `cnnctl train`, each started as a subprocess.
"""
