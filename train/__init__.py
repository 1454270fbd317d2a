"""optax training of swin_jax models on every local device and host: `python -m train`."""
