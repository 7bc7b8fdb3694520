"""wsl-ray: sweeps of self-supervised learning with whitening losses on Ray."""
