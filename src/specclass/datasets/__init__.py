"""Non-spectral learning datasets (the Keras MNIST track)."""
