import sys

from trim_pomdp.cli import main

sys.exit(main())
