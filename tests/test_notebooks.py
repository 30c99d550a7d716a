"""The teaching notebooks: stored without outputs, and each one runs from top to bottom.

Every notebook is executed in a fresh ``python3`` kernel with ``notebooks/`` as working
directory. jupyter_client starts the kernelspec's ``python`` as this interpreter
(``sys.executable``), so the kernel sees the same environment as pytest; nothing has to be
registered with ``ipykernel install``. Notebooks that load a dataset need ``JAXCNN_DATA_DIR``.

Each executed notebook is stored, outputs and all, in ``notebooks/_executed/`` (not committed):
the documentation build renders those copies instead of running the notebooks a second time.
"""

import ast
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXECUTED_DIR = NOTEBOOKS_DIR / "_executed"  # read by docs/conf.py
CELL_TIMEOUT_S = 300


def _read(path):
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_curriculum_is_there():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 8, names
    readme = (NOTEBOOKS_DIR / "README.md").read_text()
    for name in names:
        assert name.removesuffix(".ipynb") in readme, f"notebooks/README.md does not list {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.get("outputs") == [], f"{path.name}: code cell {i} has outputs; strip them before committing"
        assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_only_the_public_api(path):
    """No private module or name of jaxcnn, and nothing from experiments/ (not a package)."""
    for i, cell in enumerate(_code_cells(_read(path))):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                assert parts[0] != "experiments", f"{path.name}, code cell {i}: imports {name}"
                if parts[0] == "jaxcnn":
                    assert not any(part.startswith("_") for part in parts), f"{path.name}, code cell {i}: imports {name}"


def _needs_data(nb) -> bool:
    # Every dataset access in the notebooks goes through jaxcnn.data.load(...).
    return any("load(" in cell.source for cell in _code_cells(nb))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch, request):
    nbclient = pytest.importorskip("nbclient")
    nb = _read(path)
    if _needs_data(nb):
        request.getfixturevalue("data_dir")  # skips when JAXCNN_DATA_DIR is unset
    # The kernel inherits this environment: draw with the notebook's inline backend even
    # where CI exports MPLBACKEND=Agg for the other tests.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    errors = [
        output
        for cell in _code_cells(nb)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors
    EXECUTED_DIR.mkdir(exist_ok=True)
    nbformat.write(nb, EXECUTED_DIR / path.name)
