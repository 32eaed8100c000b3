"""python -m sdedu.bench_perf: the performance sections of the benchmark alone."""

import sys

from sdedu.bench_perf import main

sys.exit(main())
