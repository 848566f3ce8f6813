"""``python -m mlstack_core.jobs "package.app:create_app()"``: the scheduler process (see jobs.runner)."""

import sys

from mlstack_core.jobs.runner import main

sys.exit(main())
