"""Tables from a benchmark JSON: ``python -m experiments.benchmarks.report [--markdown|--docs] [path]``.

Every figure printed here is read from the JSON that ``python -m experiments.benchmarks``
wrote; nothing is typed by hand. ``--markdown`` prints GitHub tables; ``--docs`` writes
them into the documentation's performance page (docs/performance.md) between the
``<!-- performance -->`` markers, and a summary of the train-step ratios into README.md
between the ``<!-- performance-summary -->`` markers.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parent / "results" / "bench.json"
PERFORMANCE_PAGE = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
MARKERS = ("<!-- performance -->", "<!-- /performance -->")
README = Path(__file__).resolve().parents[2] / "README.md"
README_MARKERS = ("<!-- performance-summary -->", "<!-- /performance-summary -->")

# The goals: jaxcnn's train step against PyTorch eager's best layout (speedup, higher is
# better), and no convolution microbenchmark slower than 1.5x PyTorch's best.
TRAIN_GOALS = {"SimpleCNN": 1.2, "LeNet5": 1.0, "ResNet18": 1.0, "UNet": 1.0}
MICRO_CONV_GOAL = 1 / 1.5

TORCH = ("torch NCHW", "torch channels_last", "torch NCHW 1 thread", "torch channels_last 1 thread")
TRAIN_ORDER = ("jaxcnn", "jaxcnn[conv=lax]", "jaxcnn[xla defaults]", "jaxcnn[plain jax.jit]", "flax.linen", "lax", *TORCH)
MICRO_ORDER = ("jaxcnn", "lax", *TORCH)
PASSES_ORDER = ("jaxcnn", "torch NCHW", "torch channels_last")


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def train_table(data: dict[str, Any], markdown: bool) -> str:
    groups: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for row in data.get("train", []):
        groups[(row["model"], row["batch"])][row["framework"]] = row
    present = [fw for fw in TRAIN_ORDER if any(fw in g for g in groups.values())]
    header = ["model", "batch", *[f"{fw} img/s" for fw in present], "jaxcnn / best torch", "paired median", "goal"]
    rows = []
    for (model, batch), by_fw in groups.items():
        ours = by_fw.get("jaxcnn", {}).get("vs_best_torch")
        goal = TRAIN_GOALS.get(model)
        met = "" if ours is None or goal is None else (" met" if ours["speedup_best"] >= goal else " not met")
        rows.append([
            model,
            str(batch),
            *[_num(by_fw[fw]["images_per_s_best"]) if fw in by_fw else "-" for fw in present],
            f"{ours['speedup_best']:.2f}x ({ours['torch']})" if ours else "-",
            f"{ours['speedup_paired_median']:.2f}x" if ours else "-",
            f">= {goal}x{met}" if goal else "-",
        ])
    return _table(header, rows, markdown)


def memory_table(data: dict[str, Any], markdown: bool) -> str:
    groups: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for row in data.get("train", []):
        groups[(row["model"], row["batch"])][row["framework"]] = row
    present = [fw for fw in TRAIN_ORDER if any(fw in g for g in groups.values())]
    header = ["model", "batch", *[f"{fw} MiB" for fw in present]]
    rows = []
    for (model, batch), by_fw in groups.items():
        cells = []
        for fw in present:
            b = by_fw.get(fw, {}).get("memory", {}).get("bytes")
            cells.append(_num(b / 2**20, 1) if b is not None else "-")
        rows.append([model, str(batch), *cells])
    return _table(header, rows, markdown)


def micro_table(data: dict[str, Any], markdown: bool) -> str:
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in data.get("micro", []):
        groups[row["op"]][row["framework"]] = row
    present = [fw for fw in MICRO_ORDER if any(fw in g for g in groups.values())]
    header = ["op (fwd + bwd)", *[f"{fw} ms" for fw in present], "jaxcnn / best torch", "jaxcnn GFLOP/s",
              "of matmul", "goal"]
    rows = []
    for op, by_fw in groups.items():
        ours = by_fw.get("jaxcnn", {})
        vs = ours.get("vs_best_torch")
        is_conv = ours.get("kind") in ("conv", "conv_transpose")
        goal = ""
        if vs and is_conv:
            goal = ">= 0.67x " + ("met" if vs["speedup_best"] >= MICRO_CONV_GOAL else "not met")
        frac = ours.get("fraction_of_matmul")
        rows.append([
            op,
            *[_num(by_fw[fw]["ms_best"], 2) if fw in by_fw else "-" for fw in present],
            f"{vs['speedup_best']:.2f}x" if vs else "-",
            _num(ours.get("gflops_per_s_best"), 1),
            f"{100 * frac:.0f}%" if frac is not None else "-",
            goal or "-",
        ])
    return _table(header, rows, markdown)


def passes_table(data: dict[str, Any], markdown: bool) -> str:
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for row in data.get("passes", []):
        groups[(row["op"], row["pass"])][row["framework"]] = row
    present = [fw for fw in PASSES_ORDER if any(fw in g for g in groups.values())]
    header = ["op", "pass", *[f"{fw} ms" for fw in present], "jaxcnn / best torch", "paired median"]
    rows = []
    for (op, name), by_fw in groups.items():
        vs = by_fw.get("jaxcnn", {}).get("vs_best_torch")
        rows.append([
            op, name,
            *[_num(by_fw[fw]["ms_best"], 2) if fw in by_fw else "-" for fw in present],
            f"{vs['speedup_best']:.2f}x ({vs['torch']})" if vs else "-",
            f"{vs['speedup_paired_median']:.2f}x" if vs else "-",
        ])
    return _table(header, rows, markdown)


def summary(data: dict[str, Any]) -> str:
    env = data.get("environment", {})
    peak = data.get("matmul") or {}
    torch = env.get("torch") or {}
    parts = [
        f"command: `{data.get('command', '?')}`",
        f"date: {env.get('date', '?')}, host CPU: {env.get('cpu', '?')} x {env.get('cpu_count', '?')}, "
        f"load average at start: {env.get('load_average_at_start')}",
        f"jax {env.get('jax')} ({env.get('jax_backend')}), flax {env.get('flax')}, torch {torch.get('version')} "
        f"({torch.get('threads')} threads), XLA_FLAGS={env.get('xla_flags')!r}, "
        f"jaxcnn compiler options: {env.get('jaxcnn_compiler_options')}",
        f"host memory (every framework): {env.get('host_memory', 'not recorded')}",
        f"timing: {data.get('settings', {}).get('rounds')} interleaved rounds; figures are the best round, "
        "ratios best/best with the median of per-round ratios beside them",
    ]
    if peak:
        parts.append(
            f"float32 matmul {peak.get('size')}^3: jax {_num(peak.get('jax_gflops_best'), 1)} GFLOP/s, "
            f"torch {_num(peak.get('torch_gflops_best'), 1)} GFLOP/s (reference for 'of matmul')"
        )
    gpu = data.get("gpu") or {}
    if gpu.get("skipped"):
        parts.append(f"GPU part skipped: {gpu['skipped']}")
    elif gpu:
        parts.append(
            f"GPU {gpu.get('device')}: {gpu.get('model')} batch {gpu.get('batch')}: "
            f"{_num(gpu.get('images_per_s_best'))} img/s, MFU {gpu.get('mfu')}"
            + (f"; PyTorch {_num(gpu['frameworks']['torch']['images_per_s_best'])} img/s, jaxcnn "
               f"x{gpu['jaxcnn_vs_torch']['speedup_best']:.2f}" if "jaxcnn_vs_torch" in gpu else "")
        )
    return "\n".join(f"- {p}" for p in parts)


def render(data: dict[str, Any], markdown: bool) -> str:
    out = [summary(data)]
    if data.get("train"):
        out += ["", "Train step, images/s (higher is better):", "", train_table(data, markdown)]
        out += ["", "Train step memory (see the JSON's `memory.method` for what each figure counts):", "",
                memory_table(data, markdown)]
    if data.get("micro"):
        out += ["", "Layer forward + backward, ms (lower is better):", "", micro_table(data, markdown)]
    if data.get("passes"):
        out += ["", "Each pass of a conv layer on its own, ms (lower is better):", "", passes_table(data, markdown)]
    return "\n".join(out)


def ratio_table(data: dict[str, Any]) -> str:
    """The README's summary: each train step's jaxcnn speed against flax.linen and PyTorch."""
    by_key: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for row in data.get("train", []):
        by_key[(row["model"], row["batch"])][row["framework"]] = row
    rows = []
    for (model, batch), by_fw in by_key.items():
        ours = by_fw.get("jaxcnn")
        if ours is None:
            continue
        flax = by_fw.get("flax.linen")
        vs_flax = f"{ours['images_per_s_best'] / flax['images_per_s_best']:.2f}x" if flax else "-"
        vs_torch = ours.get("vs_best_torch")
        rows.append([model, str(batch), _num(ours["images_per_s_best"]), vs_flax,
                     f"{vs_torch['speedup_best']:.2f}x" if vs_torch else "-"])
    table = _table(["model", "batch", "jaxcnn img/s", "vs flax.linen", "vs best PyTorch eager"], rows, True)
    env = data.get("environment", {})
    host = f"{env.get('cpu', 'the benchmark host')} x {env.get('cpu_count', '?')}, {env.get('date', '')[:10]}"
    return f"Train steps, float32, images/s and speed ratios (higher is faster; {host}):\n\n{table}"


def write_into_page(text: str, page: Path = PERFORMANCE_PAGE, markers: tuple[str, str] = MARKERS) -> None:
    """Replaces what lies between the page's ``markers`` with ``text``."""
    start, end = markers
    content = page.read_text()
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise SystemExit(f"{page} must hold one {start} ... {end} block")
    head, rest = content.split(start)
    _, tail = rest.split(end)
    page.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH))
    parser.add_argument("--markdown", action="store_true", help="GitHub markdown tables")
    parser.add_argument("--docs", action="store_true",
                        help=f"write the markdown tables into {PERFORMANCE_PAGE.name} and their summary into README.md")
    args = parser.parse_args(argv)
    with open(args.path) as f:
        text = render(json.load(f), args.markdown or args.docs)
    if args.docs:
        write_into_page(text)
        with open(args.path) as f:
            write_into_page(ratio_table(json.load(f)), README, README_MARKERS)
        print(f"wrote the tables from {args.path} into {PERFORMANCE_PAGE} and their summary into {README}")
    else:
        print(text)


if __name__ == "__main__":
    main()
