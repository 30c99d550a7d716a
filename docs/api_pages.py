"""Writes the API reference pages ``docs/api/*.md``: ``python docs/api_pages.py``.

One page per public module or package directly under ``jaxcnn`` (and one for ``jaxcnn``
itself). A package's page documents the names it exports, grouped by the submodule that
defines them, then the public names of its submodules that it does not export. Every public
object is documented once, under the path users import it by.

Public modules are those with no part of their name starting with ``_``; a module's public names
are its ``__all__``, or else the names its own source defines at top level (``def``, ``class``,
assignments) without a leading ``_``. ``tests/test_docs.py`` checks the committed pages against
this rule, so a new public name without a reference entry fails the tests: rerun this script.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
API_DIR = DOCS / "api"


def public_modules() -> list[str]:
    """Every importable jaxcnn module without a private part, ``jaxcnn`` first."""
    import jaxcnn

    names = ["jaxcnn"]
    for info in pkgutil.walk_packages(jaxcnn.__path__, "jaxcnn."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def public_names(module_name: str) -> list[str]:
    """A module's ``__all__``, or the public names its own source defines at top level."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse(Path(inspect.getsourcefile(module)).read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = [node.name]
        elif isinstance(node, ast.Assign):
            found = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = [node.target.id]
        else:
            found = []
        names += [n for n in found if not n.startswith("_") and n not in names]
    return names


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "autofunction"
    return "autodata"


def _is_flax_module(obj: object) -> bool:
    import flax.linen as nn

    return inspect.isclass(obj) and issubclass(obj, nn.Module)


def _entry(path: str, obj: object) -> str:
    # autodoc's directives run in reStructuredText: MyST's own directive syntax renders nothing.
    directive = _directive(obj)
    options = []
    if directive == "autodata" and len(repr(obj)) > 120:
        options.append(":no-value:")  # a long repr (a dict of classes, a partial) says less than the docstring
    if directive == "autoclass":
        options.append(":members:")
        if _is_flax_module(obj):
            # A module's fields are its constructor arguments: list them with types and defaults,
            # including those of a private base (not flax's own Module attributes).
            options += [":undoc-members:", ":inherited-members: Module", ":exclude-members: name, parent, scope"]
        if "__call__" in vars(obj):
            options.append(":special-members: __call__")
    return "\n".join(["```{eval-rst}", f".. {directive}:: {path}", *(f"   {o}" for o in options), "```", ""])


def _defining_module(package: str, name: str, obj: object, submodules: list[str]) -> str:
    owner = getattr(obj, "__module__", None)
    if owner in submodules:
        return owner
    for sub in submodules:  # constants: the submodule whose source assigns the name
        if name in public_names(sub) and getattr(importlib.import_module(sub), name, None) is obj:
            return sub
    return package


def page_text(top: str, modules: list[str]) -> str:
    """The page of ``top`` (a module directly under jaxcnn, or jaxcnn) and its submodules."""
    package = importlib.import_module(top)
    submodules = [m for m in modules if m.startswith(top + ".")] if top != "jaxcnn" else []
    title = f"`{top}`"
    lines = [f"# {title}", "", f"```{{eval-rst}}\n.. automodule:: {top}\n   :no-members:\n```", ""]
    documented: list[object] = []
    groups: dict[str, list[str]] = {}
    for name in public_names(top):
        obj = getattr(package, name)
        if inspect.ismodule(obj):
            continue  # a submodule: documented on its own page or section
        home = getattr(obj, "__module__", None) or ""
        if top == "jaxcnn" and home.count(".") >= 1 and home in modules:
            continue  # e.g. jaxcnn.summary: documented on the page of jaxcnn.summary
        groups.setdefault(_defining_module(top, name, obj, submodules), []).append(name)
    for owner in [top, *submodules]:
        extra = []
        for name in public_names(owner) if owner != top else []:
            obj = getattr(importlib.import_module(owner), name)
            if inspect.ismodule(obj) or any(obj is d for d in documented) or name in groups.get(owner, []):
                continue
            if any(getattr(package, n, None) is obj for n in public_names(top)):
                continue  # exported by the package: documented under the package's name
            extra.append(name)
        names = groups.get(owner, [])
        if not names and not extra:
            continue
        if owner != top:
            # jaxcnn.functional.conv is also the function conv: the module then takes no index entry.
            # The name is looked up in the submodule's own parent (jaxcnn.backends.cpu for
            # jaxcnn.backends.cpu.conv), which need not be the page's package.
            parent, _, leaf = owner.rpartition(".")
            shadowed = not inspect.ismodule(getattr(importlib.import_module(parent), leaf, None))
            no_index = "\n   :no-index:" if shadowed else ""
            lines += [f"## `{owner}`", "",
                      f"```{{eval-rst}}\n.. automodule:: {owner}\n   :no-members:{no_index}\n```", ""]
        for name in names:
            obj = getattr(package, name)
            documented.append(obj)
            lines.append(_entry(f"{top}.{name}", obj))
        for name in extra:
            obj = getattr(importlib.import_module(owner), name)
            documented.append(obj)
            lines.append(_entry(f"{owner}.{name}", obj))
    return "\n".join(lines).rstrip() + "\n"


def pages() -> dict[str, str]:
    """File name -> text of every reference page, and the index."""
    modules = public_modules()
    tops = ["jaxcnn"] + [m for m in modules if m.count(".") == 1]
    out = {}
    for top in tops:
        out[("jaxcnn" if top == "jaxcnn" else top.split(".")[1]) + ".md"] = page_text(top, modules)
    toc = "\n".join(name.removesuffix(".md") for name in out)
    out["index.md"] = (
        "# API reference\n\nGenerated from the docstrings by `python docs/api_pages.py`; every public name of "
        "every public module is here (`tests/test_docs.py` checks it).\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n"
    )
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    API_DIR.mkdir(exist_ok=True)
    for old in API_DIR.glob("*.md"):
        old.unlink()
    for name, text in pages().items():
        (API_DIR / name).write_text(text)
    print(f"wrote {len(pages())} pages into {API_DIR}")


if __name__ == "__main__":
    main()
