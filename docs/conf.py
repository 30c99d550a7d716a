"""Sphinx configuration: MyST pages, MyST-NB notebooks, autodoc reference (furo theme).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are errors).
Generated inputs, written here before Sphinx reads the sources:

- ``docs/_generated/config_fields.md``: every field of ``jaxcnn.train.default_config()`` with
  type, default and meaning (from ``jaxcnn.train.config_fields``);
- ``docs/notebooks/*.ipynb``: the teaching notebooks, executed copies stored by
  ``tests/test_notebooks.py`` (``notebooks/_executed/``) where they are up to date, else the
  stored notebooks without outputs (``JAXCNN_DOCS_EXECUTE=1`` executes those at build time).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's jaxcnn, not an older installed copy

import jaxcnn  # noqa: E402
from jaxcnn.train import config_fields  # noqa: E402

project = "jaxcnn"
author = "jaxcnn contributors"
copyright = "jaxcnn contributors"
release = jaxcnn.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

# Guides written by several people are picked up by a glob in index.md; the rest is listed.
# Heading-level style (a page whose sections start at H3, say) is not an error; links are checked.
suppress_warnings = ["myst.header"]
exclude_patterns = ["_build", "_generated", "**/.ipynb_checkpoints", "README.md"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

# Cross-references are checked (-n): every jaxcnn name a docstring refers to must exist in the
# reference. Other libraries' types are not (their inventories would need the network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|flax|numpy|np|optax|orbax|grain|collections|os|pathlib|ml_collections|"
               r"matplotlib|typing|builtins|tensorflow_datasets|chex|safetensors|torch)(\..*)?"),
    # A docstring may point its reader at a private helper (:func:`_chunked`); private names are
    # never in the reference, so such a reference renders as code without a link.
    (r"py:.*", r"(.*\.)?_[A-Za-z][^.]*(\..*)?"),
]
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Notebooks: rendered from their stored outputs (see the module docstring).
nb_execution_mode = "cache" if os.environ.get("JAXCNN_DOCS_EXECUTE") == "1" else "off"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_merge_streams = True

html_theme = "furo"
html_title = f"jaxcnn {release}"
html_static_path = []


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _generate_config_fields() -> None:
    _write_if_changed(DOCS / "_generated" / "config_fields.md", config_fields.markdown_table() + "\n")


def _with_title(path: Path) -> str:
    """The notebook's JSON, with an H1 title cell when it has none (its sections start at H2)."""
    nb = json.loads(path.read_text())
    first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if first is None or not "".join(first["source"]).lstrip().startswith("# "):
        number, _, words = path.stem.partition("_")
        title = f"# {number}. {words.replace('_', ' ').capitalize()}"
        nb["cells"].insert(0, {"cell_type": "markdown", "id": "jaxcnn-docs-title", "metadata": {},
                               "source": [title]})
    return json.dumps(nb, indent=1) + "\n"


def _copy_notebooks() -> None:
    """docs/notebooks/ gets each notebook, executed where a current executed copy exists."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    executed_dir = ROOT / "notebooks" / "_executed"
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for old in target.glob("*.ipynb"):
        if old.name not in {s.name for s in sources}:
            old.unlink()
    executed = 0
    for source in sources:
        copy = executed_dir / source.name
        use = copy if copy.exists() and copy.stat().st_mtime >= source.stat().st_mtime else source
        executed += use is copy
        _write_if_changed(target / source.name, _with_title(use))
    print(f"jaxcnn docs: {executed} of {len(sources)} notebooks with stored outputs "
          f"(run tests/test_notebooks.py to store the others)")


def _data_docstring(app, what, name, obj, options, lines) -> None:
    """A constant has no docstring of its own: autodoc would show its type's (dict's, partial's)."""
    if what != "data" or obj is None:
        return
    if isinstance(obj, functools.partial):  # ResNet18 = partial(ResNet, ...): autodoc shows ResNet's
        arguments = ", ".join(f"{k}={getattr(v, '__name__', repr(v))}" for k, v in obj.keywords.items())
        lines[:] = [f":class:`{obj.func.__module__}.{obj.func.__name__}` with ``{arguments}``."]
    elif hasattr(obj, "__origin__"):  # Batch = dict[str, Any]
        lines.clear()  # autodoc adds "alias of ..."
    elif inspect.getdoc(type(obj)) and "\n".join(lines).strip() == inspect.getdoc(type(obj)).strip():
        lines.clear()


def _resolve_in_packages(app, env, node, contnode):
    """``:func:`shard_batch``` in ``jaxcnn.data.device`` finds ``jaxcnn.data.shard_batch``.

    Names are documented where users import them (the package), while docstrings refer to them
    from the submodule that defines them: try the enclosing packages, then a unique jaxcnn object
    of that name. Anything else stays unresolved, and the build fails (nitpicky, -W).
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip("~.")
    parts = (node.get("py:module") or "").split(".")
    candidates = [".".join(parts[:i] + [target]) for i in range(len(parts) - 1, 0, -1)]
    # A full path through the defining submodule (jaxcnn.data.device.shard_batch): the packages
    # above it (jaxcnn.data.shard_batch).
    path = target.split(".")
    if path[0] == "jaxcnn":
        candidates += [".".join(path[:i] + path[-1:]) for i in range(len(path) - 2, 0, -1)]
    candidates += sorted(n for n in domain.objects if n.startswith("jaxcnn.") and n.endswith("." + target))[:1]
    for candidate in candidates:
        if candidate in domain.objects:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], candidate, node,
                                       contnode)
    return None


_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _repository_links(app, docname, source) -> None:
    """A guide's link to a repository file outside docs/ (``../README.md``, a config) becomes its
    text and path: such files are not pages of the site, and GitHub still shows the link in the
    Markdown. Links between pages stay links, and a broken one still fails the build."""
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".md":
        return

    def replace(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:", target):
            return match.group(0)  # https:, mailto:, project: ...
        resolved = (path.parent / target).resolve()
        if DOCS in resolved.parents or resolved == DOCS:
            return match.group(0)
        relative = resolved.relative_to(ROOT) if ROOT in resolved.parents else Path(target)
        return f"{text} (`{relative.as_posix()}`)"

    source[0] = _LINK.sub(replace, source[0])


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _data_docstring, priority=100)  # before napoleon
    app.connect("missing-reference", _resolve_in_packages)
    app.connect("source-read", _repository_links)


_generate_config_fields()
_copy_notebooks()
