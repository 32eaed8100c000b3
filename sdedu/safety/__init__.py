"""Safety, provenance and privacy, shown for real: watermarks, a safety checker, concept erasure, memorisation.

Issue #19. Each module here works on a trained pipeline and measures what it can and cannot guarantee.
"""

from sdedu.safety.checker import SafetyChecker  # noqa: F401 (issue 19.2)
from sdedu.safety.erasure import ESDConfig, erase_concept  # noqa: F401 (issue 19.3)
from sdedu.safety.watermark import WatermarkKey, detect_watermark, watermark_statistic  # noqa: F401 (issue 19.1)
