"""Control and adaptation with little data: teach new words (textual inversion, LoRA), styles, knowledge.

Issue #18. Each module here takes a trained pipeline and returns a changed copy; nothing here trains from scratch.
"""

from sdedu.adapt.teach import teach

__all__ = ["teach"]
