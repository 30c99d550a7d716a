"""The documentation stays complete: the API reference names every public name, the config
field table describes every field, and the version has one source.

The site itself is built by ``.ci/run`` (``sphinx-build -W``: a reference entry whose object
does not import, a broken cross-reference or a missing page fails that build).
"""

import importlib
import importlib.util
import inspect
import re
import tomllib
from pathlib import Path

import ml_collections

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
DIRECTIVE = re.compile(r"^\.\. auto(?:function|class|exception|data):: (\S+)$", re.M)


def _api_pages_module():
    spec = importlib.util.spec_from_file_location("api_pages", ROOT / "docs" / "api_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def test_every_public_name_of_every_public_module_is_in_the_reference():
    api_pages = _api_pages_module()
    documented_paths = {m for page in API_DIR.glob("*.md") for m in DIRECTIVE.findall(page.read_text())}
    assert documented_paths, f"no autodoc entries found in {API_DIR}"
    documented_objects = [_resolve(p) for p in documented_paths]
    modules = api_pages.public_modules()
    assert {"jaxcnn.functional", "jaxcnn.nn", "jaxcnn.models", "jaxcnn.train", "jaxcnn.data"} <= set(modules)
    missing = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in api_pages.public_names(module_name):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or f"{module_name}.{name}" in documented_paths:
                continue
            # Documented under another path (a package re-exports it): the same object.
            # Plain values (ints, strings) are not unique objects: the same name in a package above.
            if not isinstance(obj, (int, float, str, bool)) and any(obj is d for d in documented_objects):
                continue
            parents = [module_name.rsplit(".", k)[0] for k in range(1, module_name.count(".") + 1)]
            if any(f"{p}.{name}" in documented_paths and getattr(importlib.import_module(p), name, None) == obj
                   for p in parents):
                continue
            missing.append(f"{module_name}.{name}")
    assert not missing, f"missing from docs/api (run `python docs/api_pages.py`): {missing}"


def test_the_reference_rule_sees_names_without_all():
    # jaxcnn.train.config has no __all__: its public names come from its source.
    names = _api_pages_module().public_names("jaxcnn.train.config")
    assert "default_config" in names and "validate_config" in names
    assert not any(n.startswith("_") for n in names)


def _leaf_paths(config, prefix=""):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict) and f"{prefix}{key}" not in {
            "model", "optimizer.kwargs", "augment_options", "dataset.derived_options", "task_options"
        }:
            yield from _leaf_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_config_field_has_a_description_and_every_description_a_field():
    from jaxcnn.train import config_fields, default_config

    fields = set(_leaf_paths(default_config())) | {"model.name"}
    described = set(config_fields.DESCRIPTIONS)
    assert fields - described == set(), f"fields without a description: {sorted(fields - described)}"
    assert described - fields == set(), f"descriptions of no field: {sorted(described - fields)}"
    assert all(text.strip() for text in config_fields.DESCRIPTIONS.values())


def test_default_config_docstring_lists_every_field_with_its_default():
    from jaxcnn.train import default_config

    doc = default_config.__doc__
    config = default_config()
    for path in _leaf_paths(config):
        assert f"``{path}``" in doc, path
    assert "``128``" in doc and "``'SimpleCNN'``" in doc  # batch_size and model.name defaults


def test_version_comes_from_pyproject():
    import jaxcnn

    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert jaxcnn.__version__ == version
    assert not re.search(r'^__version__\s*=\s*"', (ROOT / "jaxcnn" / "__init__.py").read_text(), re.M)


def test_link_check_finds_missing_pages_and_anchors(tmp_path):
    spec = importlib.util.spec_from_file_location("check_links", ROOT / "docs" / "check_links.py")
    check_links = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_links)
    (tmp_path / "api").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="api/nn.html#jaxcnn.nn.Conv">ok</a><a href="api/gone.html">gone</a>'
        '<a href="#top">self</a><a href="api/nn.html#nowhere">bad anchor</a>'
        '<a href="https://example.org/x.html">external</a><img src="missing.png">'
    )
    (tmp_path / "api" / "nn.html").write_text('<dt id="jaxcnn.nn.Conv"></dt><a href="../index.html">up</a>')
    broken = check_links.broken_links(tmp_path)
    assert broken == [
        "index.html: api/gone.html (no such file)",
        "index.html: #top (no such anchor)",
        "index.html: api/nn.html#nowhere (no such anchor)",
        "index.html: missing.png (no such file)",
    ]
