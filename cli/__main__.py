import sys

from cli.qunctl import main

sys.exit(main())
