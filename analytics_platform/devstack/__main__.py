import sys

from analytics_platform.devstack.cli import main

sys.exit(main())
