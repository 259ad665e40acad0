"""``python -m hf_lottery`` (and so ``accelerate launch -m hf_lottery``)."""

import sys

from .commands.cli import main

sys.exit(main())
