from swin_jax.arguments import exit_with
from train.loop import main

exit_with(main())
