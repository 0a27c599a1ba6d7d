"""`cnnctl serve`: a trained run behind an HTTP API and a web page, with dynamic batching."""
