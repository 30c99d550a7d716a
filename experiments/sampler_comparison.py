"""DDPM against DDIM on a trained generation workdir: sample quality and sampling time per setting.

    python -m experiments.sampler_comparison runs/mnist_ddpm --classifier runs/mnist_fast \\
        [--num 1000] [--ddpm-num 200] [--ddim-steps 10 25 50]

For DDIM at each number of steps (``--num`` samples) and for DDPM ancestral sampling over all
``T`` training steps (``--ddpm-num`` samples: it costs ``T`` network calls per sample, 20x
DDIM-50 at ``T = 1000``), it draws class-conditional samples (classes in turn, the run's
guidance, key 0) from the best checkpoint and scores them with the classifier of
``--classifier`` (a ``jaxcnn train`` classification workdir on the same dataset; see
:class:`jaxcnn.train.generation_task.SampleJudge`): Fréchet distance to as many test images,
label accuracy, and seconds per 1,000 samples, timed after compilation. Because the
Fréchet distance of a small sample is biased upwards, every DDIM setting is also scored on its
first ``--ddpm-num`` samples, the row to compare with DDPM. Writes
``<workdir>/sampler_comparison.json``, which ``python -m experiments.results`` collects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxcnn.train.generation_task import generate, load_generator, sample_judge


def compare(workdir: Path, classifier: Path, *, num: int, ddpm_num: int, ddim_steps: list[int]) -> list[dict]:
    generator = load_generator(workdir)
    task = generator.task
    judge_n = {n: sample_judge(classifier, task.config, n) for n in sorted({num, ddpm_num})}
    settings = [("ddim", steps, num) for steps in ddim_steps] + [("ddpm", task.schedule.num_timesteps, ddpm_num)]
    rows = []
    for sampler, steps, n in settings:
        labels = (np.arange(n) % generator.num_classes).astype(np.int32) if generator.num_classes else None

        def draw(count, labels=labels, sampler=sampler, steps=steps, compile_only=False):
            return generate(generator.model, generator.params, task, jax.random.PRNGKey(0), count,
                            labels=None if labels is None else labels[:count], sampler=sampler, steps=steps,
                            guidance=task.guidance, compile_only=compile_only)

        draw(n, compile_only=True)  # the timed call reuses the compiled sampler
        start = time.perf_counter()
        pixels = task.to_pixels(draw(n))
        seconds = time.perf_counter() - start
        row = {"sampler": sampler, "steps": steps, "num": n, "seconds": seconds,
               "seconds_per_1000": 1000 * seconds / n, "guidance": task.guidance, "backend": jax.default_backend(),
               **judge_n[n].score(pixels, labels)}
        if n != ddpm_num:  # the same number of samples as DDPM, for a like-for-like distance
            small = judge_n[ddpm_num].score(pixels[:ddpm_num], None if labels is None else labels[:ddpm_num])
            row[f"frechet_distance_at_{ddpm_num}"] = small["frechet_distance"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sampler_comparison",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path, help="a finished `jaxcnn train` generation workdir")
    parser.add_argument("--classifier", type=Path, required=True, help="a classification workdir, same dataset")
    parser.add_argument("--num", type=int, default=1000, help="DDIM samples per setting")
    parser.add_argument("--ddpm-num", type=int, default=200, help="DDPM samples (T network calls each)")
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[10, 25, 50])
    args = parser.parse_args(argv)
    if args.num < 2 or not 2 <= args.ddpm_num <= args.num:
        parser.error(f"need --num >= 2 and 2 <= --ddpm-num <= --num, got {args.num} and {args.ddpm_num}")
    rows = compare(args.workdir, args.classifier, num=args.num, ddpm_num=args.ddpm_num, ddim_steps=args.ddim_steps)
    out = args.workdir / "sampler_comparison.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
