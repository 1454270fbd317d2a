import sys

from train.loop import main

sys.exit(main())
