import sys

from modelloop_trainer.optimize.cli import main

sys.exit(main())
