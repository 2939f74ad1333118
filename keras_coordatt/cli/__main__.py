"""``python -m keras_coordatt.cli``."""

import sys

from keras_coordatt.cli import main

sys.exit(main())
