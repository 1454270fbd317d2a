import sys

from swin_jax.cli import main

sys.exit(main())
