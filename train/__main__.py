"""``python -m train --config X.yaml ...`` is ``python train/run.py --config X.yaml ...`` (see train/run.py)."""

from asgl.train.run import exit_process, main

exit_process(main())
