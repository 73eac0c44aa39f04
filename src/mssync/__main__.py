import sys

from mssync.cli import main

sys.exit(main())
