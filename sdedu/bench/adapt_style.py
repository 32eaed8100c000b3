"""Knowledge, SDEdit as style transfer, the style LoRA (issue 18 items 4 and 6), read off by the course judge.

adaptation  knowledge: the 40 knowledge prompts ("a tomato", "a sail in the top left", words the
            model never saw) generated with the unknown word ignored and with it expanded by the
            knowledge base (same seeds), scored against what the prompt means (all attributes it
            names); and retrieval: the share of the 4 nearest captions that agree with every
            attribute the prompt means.
            SDEdit as style transfer: rendered shapes restyled by img2img towards a prompt naming
            another colour and shape (32 images, 8 quick), at each strength: the share that keeps
            the source's position and size, and the share that follows the prompt's colour and shape.
            style LoRA: the outline style taught from 16 images (400 steps, 15 quick), then the fill fraction
            of large shapes (32 prompts, 8 quick; `sdedu.adapt.style_lora`: the painted share of the shape's
            extent, the judge's box fill in the JSON) in one table: rendered filled shapes, rendered
            outlines, outlines through the VAE (the ceiling), the original pipeline, and the styled one
            without and with the word "outline".
"""

from __future__ import annotations

from sdedu.adapt.knowledge import KnowledgeBase, knowledge_prompts, measure_knowledge, retrieve
from sdedu.adapt.style_lora import EVAL_SEED, STYLE_WORD, measure_style, teach_style
from sdedu.adapt.style_lora import STEPS as STYLE_STEPS
from sdedu.adapt.style_transfer import STRENGTHS, sdedit_sweep
from sdedu.bench.report import STEPS, Context, Row

SECTION = "adaptation"


def knowledge_rows(ctx: Context) -> list[Row]:
    """Adherence to knowledge prompts without and with the expansion; retrieval's agreement."""
    kb = KnowledgeBase()
    prompts = knowledge_prompts(kb)
    measured = measure_knowledge(ctx.generate, prompts, kb)
    before, after = measured["without"]["all"], measured["with"]["all"]
    agree = []
    for prompt, meant in zip(prompts, measured["meant"]):
        found = retrieve(ctx.pipe, prompt, k=4, knowledge=kb)
        agree += [all(a[key] == value for key, value in meant.items()) for a in found.attributes]
    label = f"knowledge prompts ({len(prompts)}, e.g. '{prompts[0]}')"
    return [
        Row(SECTION, f"{label}: adherence, unknown word ignored", before, extra={"n": len(prompts)}),
        Row(
            SECTION,
            f"{label}: adherence, expanded by the knowledge base",
            after,
            target=f"> {before:.3g} (ignored)",
            passed=after > before,
            extra={k: measured["with"][k] for k in ("shape", "color", "size", "position")},
        ),
        Row(SECTION, "knowledge retrieval: share of the 4 nearest captions agreeing", sum(agree) / len(agree)),
    ]


def sdedit_style_rows(ctx: Context) -> list[Row]:
    """SDEdit's strength sweep: content kept (position, size) and new prompt followed (colour, shape)."""
    strengths = STRENGTHS if not ctx.quick else (0.2, 0.6, 1.0)
    sweep = sdedit_sweep(ctx.pipe, n=ctx.n(32, 8), strengths=strengths, seed=ctx.seed, num_inference_steps=STEPS)
    rows = []
    for strength, kept, followed in zip(sweep["strength"], sweep["content_kept"], sweep["prompt_followed"]):
        rows.append(Row(SECTION, f"SDEdit strength {strength:.1f}: content kept (position, size)", kept))
        rows.append(Row(SECTION, f"SDEdit strength {strength:.1f}: new prompt followed (colour, shape)", followed))
    return rows


def style_lora_rows(ctx: Context) -> list[Row]:
    """The outline style LoRA: the fill fraction of its references, of the original, of the styled without and with."""
    styled = teach_style(
        ctx.pipe, steps=ctx.n(STYLE_STEPS, 15), seed=ctx.seed, prior_images=ctx.n(64, 8), progress=False
    )
    taught = styled.manifest["adaptation"]
    measured = measure_style(styled, ctx.pipe, n=ctx.n(32, 8), num_inference_steps=STEPS, seed=EVAL_SEED + ctx.seed)
    label = f"style LoRA ('{STYLE_WORD}', {taught['images']} images, {taught['method']}, {taught['steps']} steps)"
    fill, box = measured["fill fraction"], measured["box fill"]
    rows = []
    for name in fill:
        check = {}
        if name == "styled, with the word":
            check = {
                "target": f"< {fill['styled, no word']:.3g} (no word)",
                "passed": fill[name] < fill["styled, no word"],
            }
        rows.append(Row(SECTION, f"{label}: fill fraction, {name}", fill[name], extra={"box fill": box[name]}, **check))
    rows.append(Row(SECTION, f"{label}: teaching time", taught["seconds"], unit="s", extra=taught))
    return rows
