"""The Keras model a config describes: layer registry, blocks and graphs, input layers, build, summary."""
