import sys

from graft.cli.main import main

sys.exit(main())
