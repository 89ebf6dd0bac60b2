import sys

from ecgbench.cli import main

sys.exit(main())
