import sys

from ecgbench.cli.main import main

sys.exit(main())
