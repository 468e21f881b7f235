"""`python -m crystallise.scale ...`: the dispatcher process (scale/dispatch.py) that RaySupervisor starts.

Its own entry point, so that running it does not re-import a module the package already imported."""

import sys

from crystallise.scale.dispatch import main

sys.exit(main())
