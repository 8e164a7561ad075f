"""``python -m train --config X.yaml ...`` is ``python train/run.py --config X.yaml ...`` (see train/run.py)."""

import sys

from asgl.train.run import main

sys.exit(main())
