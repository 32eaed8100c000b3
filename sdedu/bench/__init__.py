"""The benchmark: `python -m sdedu.bench [--quick] [--json out.json] [--sections NAME ...] [--random]`.

Measures the shipped model against the targets of the course (see the table it prints). Each
section is a function `<name>_section(ctx) -> list[Row]`, listed in `runner.SECTIONS`; add one by
writing a function and appending it. `ctx` (a `report.Context`) holds the pipeline, the device,
quick mode, a `generate` helper that batches calls, and the compiled copies of the pipeline made
during the run. Timings live here, never in tests.

    quality
      adherence          full prompts, 25 DDIM steps, default guidance, 200 images: colour,
                         shape, position and size read off by the judge (`sdedu.metrics`)
      diversity          the partial prompt "a red shape": how often each shape appears
      held_out           adherence on the (colour, shape) pairs never seen in training
      speed              seconds for 16 images x 25 steps with guidance (median of repeats)
      vae                reconstruction PSNR of the VAE on images it never saw
    vs_diffusers
      unet_vs_diffusers  sdedu's UNet vs diffusers' UNet2DConditionModel of the nearest config,
                         and block for block (ResBlock, transformer block) at identical sizes
      sampler_overhead   sdedu's DDIM loop vs the same loop with diffusers' DDIMScheduler
    sampling
      ddim_vs_ddpm       DDIM 10/25/50 steps vs DDPM 1000: time and adherence
    samplers
      samplers           every registered sampler at equal network evaluations (NFE): time and
                         adherence, interleaved; the fewest NFE to 98% all-four adherence for
                         DDIM and DPM-Solver++(2M) (target: DPM++ needs no more than DDIM)
      latent_vs_pixel    the same UNet on 8x8x4 latents vs 32x32x3 pixels: a training step, sampling
      scaling            sampling time against batch size and number of steps
    precision
      precision          fp32 vs bf16 vs int8 vs pruned vs compiled (+ bf16): time, size, adherence
    roofline
      roofline           the UNet's achieved FLOP/s against a matmul peak measured now, that
                         of its matrix kernels alone (the most fusion could give), and that
                         of wider UNets (how it grows with the model's size); an MM-DiT of
                         SD3's design (64 image + 12 text tokens), eager and compiled, against
                         the same peak (target >= 50%), and where its time goes (profiler)
    sd3
      sd3                the two shipped models side by side: UNet + eps + DDIM vs the tiny SD3's
                         MM-DiT + flow + Euler (size, FLOPs, speed, matmul-peak fraction, path
                         straightness, adherence against NFE) and the tiny SD3's targets
    adaptation
      adaptation         "a large shape in the center" without and with negative_prompt "red":
                         the share of images judged red (it should fall), size and position kept;
                         orange and diamond taught from 4, 8, 16 images by LoRA and both, from 16
                         by textual inversion (adapt_teach): the new word's adherence, the old
                         prompts' paired change (256) and the shipped model's noise, time
    safety
      safety             issue 19, one part per module (safety.PARTS): Tree-Ring watermark detection
                         (TPR at 1% FPR) clean and after blur, noise, JPEG 75, a 1-pixel shift and
                         img2img 0.3, the p-values' calibration, from the latents z_0, adherence cost


Every comparison is measured side by side in the same run and reported as a ratio, each time the
median of several repeats; `--random` times randomly initialised networks (no trained weights
needed; adherence is then skipped). `measure` holds how to time and count (interleaved medians,
FLOPs, the matmul peak); `common` what the performance sections share (rows, prompts, inputs, a
random pipeline); `report` the Row, the Context and the table; `runner` the list and the CLI.

Timings depend on the machine and on what else runs on it: compare ratios, not seconds.
"""

from sdedu.bench.precision import precision_section
from sdedu.bench.quality import adherence_section, diversity_section, held_out_section, speed_section, vae_section
from sdedu.bench.report import STEPS, Context, Row, format_row, section_name
from sdedu.bench.roofline import roofline_section
from sdedu.bench.runner import PERFORMANCE_SECTIONS, QUALITY_SECTIONS, SECTIONS, main, run
from sdedu.bench.samplers import samplers_section
from sdedu.bench.sampling import ddim_vs_ddpm_section, latent_vs_pixel_section, scaling_section
from sdedu.bench.sd3 import sd3_section
from sdedu.bench.vs_diffusers import sampler_overhead_section, unet_vs_diffusers_section

__all__ = [
    "STEPS",
    "SECTIONS",
    "QUALITY_SECTIONS",
    "PERFORMANCE_SECTIONS",
    "Context",
    "Row",
    "format_row",
    "section_name",
    "run",
    "main",
    "adherence_section",
    "diversity_section",
    "held_out_section",
    "speed_section",
    "vae_section",
    "unet_vs_diffusers_section",
    "sampler_overhead_section",
    "ddim_vs_ddpm_section",
    "samplers_section",
    "latent_vs_pixel_section",
    "precision_section",
    "roofline_section",
    "scaling_section",
    "sd3_section",
]
