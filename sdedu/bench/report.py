"""What every section of the benchmark shares: the `Row` it reports, the `Context` it gets, the table."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sdedu import optimize

STEPS = 25  # DDIM steps of every generated image, the course's setting


@dataclass
class Row:
    """One measured figure: `value` against `target` (a text like ">= 0.95"), `passed` if it has one."""

    section: str
    metric: str
    value: float
    target: str = ""
    passed: bool | None = None
    unit: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    """What every section gets: the pipeline, quick mode, sizes that shrink in quick mode, and the
    compiled copies of the pipeline (compiling is slow: made once per batch size, they live and
    are freed with the context of one run)."""

    pipe: object
    quick: bool
    device: torch.device
    seed: int = 0
    compiled_pipes: dict = field(default_factory=dict, repr=False)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def generate(self, prompts: list[str], batch_size: int = 100, **kwargs) -> torch.Tensor:
        """Images for the prompts, in batches; image k has seed seed + k whatever the batching."""
        chunks = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            chunks.append(self.pipe(batch, num_inference_steps=STEPS, seed=self.seed + start, **kwargs).cpu())
        return torch.cat(chunks)

    def compiled(self, batch_size: int):
        """optimize.compile(pipe) for this UNet batch size, made on first use and kept for this run."""
        if batch_size not in self.compiled_pipes:
            self.compiled_pipes[batch_size] = optimize.compile(self.pipe, batch_size=batch_size)
        return self.compiled_pipes[batch_size]


def section_name(section) -> str:
    return section.__name__.removesuffix("_section")


def format_row(row: Row) -> str:
    value = f"{row.value:.3f} {row.unit}".strip()
    mark = "" if row.passed is None else ("ok" if row.passed else "MISSED")
    return f"{row.section:<10} {row.metric:<40} {value:>12}  {row.target:<8} {mark}"
