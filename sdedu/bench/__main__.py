"""python -m sdedu.bench [--quick] [--json out.json] [--sections NAME ...] [--random]."""

import sys

from sdedu.bench.runner import main

sys.exit(main())
