"""One symbol per concept (docs/NOTATION.md): the rules that can be checked by reading the text.

- s is the cosine schedule's offset only: never the guidance scale (w), DDIM's other timestep (t')
  or the VAE's scaling factor (written `scale_factor`);
- lambda is DPM-Solver's half-log-SNR: the VAE's KL weight is written `kl_weight`;
- the start of a partial reverse process is t_start, not t_s or t*;
- Karras et al.'s noise level sqrt((1 - alpha_bar_t) / alpha_bar_t) is sigma or sigma(t), never sigma_t
  (DDPM/DDIM's per-step noise);
- Stable Diffusion has five parts, said the same way everywhere.

The patterns are narrow on purpose: each matches a way of writing the old meaning that the
course really used, so that a legitimate s (the cosine offset, an English word) never trips them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
LIBRARY = sorted((ROOT / "sdedu").rglob("*.py"))


def _text(path: Path) -> str:
    """Every cell's source of a notebook (markdown and code), or a text file's contents."""
    if path.suffix == ".ipynb":
        return "\n\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
    return path.read_text()


COURSE = NOTEBOOKS + SOLUTIONS + DOCS
EVERYTHING = COURSE + LIBRARY

# The guidance scale written as s: "eps_uncond + s (eps_cond", "+ s\,\big(\varepsilon", "guidance_scale=s",
# "guidance scale s", "guidance s >= 0", "s = 0 ignores the prompt", "s = 1 is the plain conditional model".
GUIDANCE_AS_S = [
    re.compile(r"\+\s*s\s*(\\,|\\;)?\s*(\\big|\\left)?\(\s*\\?(eps|epsilon|varepsilon|hat|v_)"),
    re.compile(r"guidance_scale\s*=\s*s\b"),
    re.compile(r"guidance[ _]scale:?\s+\$?s\b(?!\w)"),
    re.compile(r"guidance s\s*[>=]"),
    re.compile(r"\bs\s*=\s*[01]\$?,?\s+(ignores|is (the )?(plain )?conditional|is no guidance)"),
    re.compile(r"\bs\s*=\s*1\s*\+\s*w\b"),
]
# s as a product index ("alpha_bar_t = prod_{s <= t} alpha_s"): the index is i.
PRODUCT_INDEX_S = [re.compile(r"\\prod_\{?s\b")]
# DDIM's other timestep as s (the library's samplers name it t_prev).
DDIM_STEP_AS_S = [re.compile(r"\\bar\\alpha_s\b"), re.compile(r"\bx_s\b"), re.compile(r"\balpha_bar_s\b")]
# The VAE scaling factor as s.
SCALE_FACTOR_AS_S = [re.compile(r"scale_factor`?\s*\$s\$"), re.compile(r"z_0\s*=\s*s\s*\\cdot")]
# The VAE's KL weight as lambda (lambda is DPM-Solver's half-log-SNR, notebook 17).
KL_WEIGHT_AS_LAMBDA = [
    re.compile(r"\\lambda\\?,?\s*\\frac\{\\mathrm\{KL\}"),
    re.compile(r"\\lambda_\{?\\(text|mathrm)\{KL\}"),
    re.compile(r"\bweight lambda\b"),
]
# Karras et al.'s noise level written as sigma_t: "sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)",
# "\sigma_t = \sqrt{\frac{1-\bar\alpha_t}{\bar\alpha_t}}", "x_0 + sigma_t eps" (the sigma-space sample).
KARRAS_SIGMA_AS_SIGMA_T = [
    re.compile(r"\\?sigma_t\s*=\s*\\sqrt\{?\s*\\frac\{\s*1\s*-\s*\\bar\\alpha_t\s*\}\{\s*\\bar\\alpha_t\s*\}"),
    re.compile(
        r"\\?sigma_t\s*=\s*\\?sqrt\s*[({]\s*\(\s*1\s*-\s*(?P<ab>\\bar\\alpha|alpha_bar)_t\s*\)\s*/\s*(?P=ab)_t\b"
    ),
    re.compile(r"x_0\s*\+\s*\\?sigma_t\s*(\\,|\\;)?\s*\\?(eps|epsilon|varepsilon)\b"),
]
# The start of a partial reverse process.
START_AS_T_S = [re.compile(r"\$t_s\$|_\{t_s\}|t\^\*|t\^\{\*\}")]
# Part counts that disagree with "Stable Diffusion has five parts".
OTHER_PART_COUNTS = [
    re.compile(r"\bfour parts\b", re.IGNORECASE),
    re.compile(r"\bfive things\b", re.IGNORECASE),
    re.compile(r"\b(Stable Diffusion|SD) (has|is) (?!five\b)(one|two|three|four|six|seven) (parts|components)\b"),
]


def _violations(paths, patterns) -> list[str]:
    found = []
    for path in paths:
        text = _text(path)
        for pattern in patterns:
            for match in pattern.finditer(text):
                line = text[: match.start()].count("\n") + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    return found


@pytest.mark.parametrize(
    ("rule", "paths", "patterns"),
    [
        ("the guidance scale is w, not s", EVERYTHING, GUIDANCE_AS_S),
        ("DDIM's other timestep is t', not s", EVERYTHING, DDIM_STEP_AS_S),
        ("alpha_bar's product index is i, not s", COURSE, PRODUCT_INDEX_S),
        ("the VAE scaling factor is written scale_factor, not s", EVERYTHING, SCALE_FACTOR_AS_S),
        ("the VAE's KL weight is written kl_weight, not lambda", EVERYTHING, KL_WEIGHT_AS_LAMBDA),
        ("the start of a partial reverse process is t_start", COURSE, START_AS_T_S),
        ("Karras et al.'s noise level is sigma or sigma(t), not sigma_t", EVERYTHING, KARRAS_SIGMA_AS_SIGMA_T),
        ("Stable Diffusion has five parts", EVERYTHING, OTHER_PART_COUNTS),
    ],
    ids=[
        "guidance-w",
        "ddim-t-prime",
        "product-index",
        "scale-factor",
        "kl-weight",
        "t-start",
        "karras-sigma",
        "five-parts",
    ],
)
def test_one_symbol_per_concept(rule, paths, patterns):
    found = _violations(paths, patterns)
    assert not found, f"{rule} (docs/NOTATION.md); found:\n" + "\n".join(found)


def test_the_patterns_catch_the_old_uses():
    """Each rule fires on the sentence it was written for, and not on the legitimate uses of s."""
    old = {
        "eps = eps_uncond + s (eps_cond - eps_uncond)": GUIDANCE_AS_S,
        r"$\hat\varepsilon = \varepsilon_\varnothing + s\,\big(\varepsilon_c - \varepsilon_\varnothing\big)$": GUIDANCE_AS_S,
        "guidance_scale: s >= 0 (0: unconditional)": GUIDANCE_AS_S,
        "v = v_uncond + s (v_cond - v_uncond)": GUIDANCE_AS_S,
        "$s = 0$ ignores the prompt, $s = 1$ is the plain conditional model": GUIDANCE_AS_S,
        r"$x_s = \sqrt{\bar\alpha_s}\,\hat x_0$": DDIM_STEP_AS_S,
        r"$\bar\alpha_t = \prod_{s \le t} (1-\beta_s)$": PRODUCT_INDEX_S,
        r"latents $z_0 = s \cdot \mathcal E(x)$ (the VAE's `scale_factor` $s$)": SCALE_FACTOR_AS_S,
        r"$\mathcal L = \text{MSE} + \lambda\, \frac{\mathrm{KL}}{N_\text{pixels}}$": KL_WEIGHT_AS_LAMBDA,
        'print(f"KL per image {kl:.1f} nats; weight lambda = {weight}")': KL_WEIGHT_AS_LAMBDA,
        "noising an image to a timestep $t_s$": START_AS_T_S,
        r"$x = x_t/\sqrt{\bar\alpha_t} = x_0 + \sigma_t\,\epsilon$": KARRAS_SIGMA_AS_SIGMA_T,
        r"$\sigma_t = \sqrt{\frac{1-\bar\alpha_t}{\bar\alpha_t}}$": KARRAS_SIGMA_AS_SIGMA_T,
        r"$\sigma_t = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$": KARRAS_SIGMA_AS_SIGMA_T,
        "Karras et al.'s noise level is sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)": KARRAS_SIGMA_AS_SIGMA_T,
        "Stable Diffusion is four parts: a tokenizer": OTHER_PART_COUNTS,
        "SD has three components": OTHER_PART_COUNTS,
    }
    for sentence, patterns in old.items():
        assert any(p.search(sentence) for p in patterns), sentence
    fine = [
        r"$f(u) = \cos^2\!\left(\frac{u+s}{1+s}\frac{\pi}{2}\right)$, offset $s = 0.008$",
        "eps = eps_uncond + w (eps_cond - eps_uncond); w = 1 is the plain conditional model",
        r"$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0$, the library's alpha_bar_prev",
        r"$\bar\alpha_t = \prod_{i=1}^{t}\alpha_i$",
        r"$\mathcal L = \text{MSE} + \texttt{kl\_weight}\cdot \frac{\mathrm{KL}}{N_\text{pixels}}$",
        r"DPM-Solver's $\lambda = -\log\sigma$, half the log-SNR",
        "Stable Diffusion has five parts: a VAE, a text encoder, a UNet, a noise process and a sampler",
        r"$\sigma = \sigma(t) = \sqrt{\frac{1-\bar\alpha_t}{\bar\alpha_t}}$ (Karras et al.)",
        "sigma_t = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)",
        r"$\sigma_t^2 = \beta_t$, the variance of a DDPM step's fresh noise",
        r"$\sigma_t = \sqrt{\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t}$, DDPM's second choice",
        "Lu et al.'s sigma_t = sqrt(1 - alpha_bar_t), written out here",
        "The recipe's three parts; the UNet is built from three parts",
    ]
    every = (
        GUIDANCE_AS_S
        + PRODUCT_INDEX_S
        + DDIM_STEP_AS_S
        + SCALE_FACTOR_AS_S
        + KL_WEIGHT_AS_LAMBDA
        + START_AS_T_S
        + KARRAS_SIGMA_AS_SIGMA_T
        + OTHER_PART_COUNTS
    )
    for sentence in fine:
        assert not any(p.search(sentence) for p in every), sentence


def test_the_table_and_notebook_00_say_it_once():
    notation = (ROOT / "docs" / "NOTATION.md").read_text()
    start_here = _text(ROOT / "notebooks" / "00_start_here.ipynb")
    for text in (notation, start_here):
        assert "Stable Diffusion has five parts" in text
        assert "guidance_scale" in text and "$w$" in text
    assert "docs/NOTATION.md" in start_here
