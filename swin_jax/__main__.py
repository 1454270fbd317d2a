from swin_jax.cli import console_main

console_main()
