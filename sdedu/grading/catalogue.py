"""Every graded item: the one place that imports all the check modules.

`ITEMS` is complete as soon as this module is imported: the checks register themselves with
`sdedu.grading.registry.register` on import, and the imports below are all of them (add a new
check module here). `checker.check` and the grader read the items from here.
"""

from __future__ import annotations

from sdedu.grading import (  # noqa: F401 - imported for their @register side effect
    checks_compression,
    checks_ddim,
    checks_diffusion,
    checks_distributed,
    checks_flow_matching,
    checks_inference,
    checks_interview,
    checks_interview_practice,
    checks_interview_safety,
    checks_lora,
    checks_ode_samplers,
    checks_precision,
    checks_schedule,
    checks_sdedit,
    checks_training,
    checks_training_loop,
    checks_unet,
    checks_vae,
    checks_visualisation,
    checks_watermark,
)
from sdedu.grading.registry import REGISTERED, Item

__all__ = ["ITEMS", "item_ids", "get_item"]

ITEMS: dict[str, Item] = dict(REGISTERED)


def item_ids() -> list[str]:
    """All item ids, grouped by notebook in course order."""
    return [item.id for item in sorted(ITEMS.values(), key=lambda item: item.notebook)]


def get_item(item_id) -> Item:
    """The item `item_id`; a ValueError listing the valid ids otherwise."""
    if not isinstance(item_id, str) or item_id not in ITEMS:
        raise ValueError(f"item_id must be one of {item_ids()}; got {item_id!r}")
    return ITEMS[item_id]
