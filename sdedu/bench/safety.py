"""safety (issue 19): watermark detection, the safety checker, concept erasure and memorisation, measured.

The section is the rows of its parts, each a function `ctx -> list[Row]` in its own module (one per
idea: `safety_watermark`, ...); a part is added by importing it here and listing it in PARTS.
"""

from __future__ import annotations

from sdedu.bench.report import Context, Row
from sdedu.bench.safety_erasure import checker_rows, erasure_rows
from sdedu.bench.safety_memorisation import memorisation_rows
from sdedu.bench.safety_watermark import curve_rows, watermark_rows

#: The parts of the section, run in this order (each: Context -> list[Row], section name "safety").
PARTS: list = [watermark_rows, curve_rows, checker_rows, erasure_rows, memorisation_rows]


def safety_section(ctx: Context) -> list[Row]:
    """The rows of every part in PARTS (module docstring)."""
    return [row for part in PARTS for row in part(ctx)]
