"""Loading checkpoints never executes code from the files.

The PyTorch side (``load_torch_resnet``/``read_state_dict`` refuse a malicious pickle in
three forms, and the payload never runs) is tested in
``tests/models/test_torch_import.py::test_malicious_pickle_is_refused_and_never_runs``.
Here: the checkpoint side -- orbax restores arrays (tensorstore), JSON and nothing else, so a
pickle planted anywhere in a checkpoint is at most reported as corruption, never run -- and a
scan of the package source for any code path that could unpickle or evaluate file contents.
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest
from fault_tools import ROOT, record, tiny_model, trees_equal

from jaxcnn.train import Checkpointer, create_train_state, load_params


class _Payload:
    """Unpickling this runs ``os.system`` (touches a marker file): the classic pickle exploit."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _state(offset: float):
    state = create_train_state(tiny_model(), optax.adam(1e-3), jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    return jax.tree.map(lambda x: x + offset if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


PLANTS = [
    "a new file state/evil.pkl",
    "a new file evil.pkl in the step folder",
    "data/metadata replaced by a pickle",
    "config/metadata replaced by a pickle",
    "integrity/metadata replaced by a pickle",
    "state/_METADATA replaced by a pickle",
    "state/manifest.ocdbt replaced by a pickle",
    "every state/d/* data file replaced by a pickle",
    "_CHECKPOINT_METADATA replaced by a pickle",
]


def test_a_pickle_planted_in_a_checkpoint_never_runs(tmp_path):
    one, two = _state(1.0), _state(2.0)
    base = tmp_path / "base"
    with Checkpointer(base, async_save=False) as ckpt:
        ckpt.save(1, one, data_state={"iterator": {"step": 1}}, config={"seed": 0})
        ckpt.save(2, two, data_state={"iterator": {"step": 2}}, config={"seed": 0})
    outcomes = []
    for i, plant in enumerate(PLANTS):
        folder = tmp_path / f"case{i}"
        shutil.copytree(base, folder)
        marker = tmp_path / f"pwned{i}"
        payload = pickle.dumps({"weights": _Payload(marker)}, protocol=2)
        assert b"system" in payload  # a working exploit: pickle.loads would run it
        step = folder / "2"
        if plant.startswith("a new file state/"):
            targets = [step / "state" / "evil.pkl"]
        elif plant.startswith("a new file evil.pkl"):
            targets = [step / "evil.pkl"]
        elif plant.startswith("every state/d/"):
            targets = list((step / "state" / "d").iterdir())
        else:
            targets = [step / plant.split(" replaced")[0]]
        for target in targets:
            target.write_bytes(payload)
        with Checkpointer(folder, async_save=False) as ckpt:
            restored = ckpt.restore(jax.tree.map(jnp.zeros_like, one))
        params, _ = load_params(folder)  # the fine-tuning / evaluation path
        assert not marker.exists(), f"{plant}: the planted pickle was executed"
        if restored.step == 2:
            assert trees_equal(restored.state, two), plant  # ignored file: state intact
            outcomes.append("ignored")
        else:
            assert restored.step == 1 and restored.skipped, plant  # reported as corruption
            outcomes.append("reported as corrupt")
        assert jax.tree.leaves(params)
    record(
        "malicious pickle planted in a checkpoint (9 places)",
        trials=len(PLANTS),
        detail=f"never executed; {outcomes.count('reported as corrupt')} reported as a corrupt checkpoint "
               f"(fell back to the previous one), {outcomes.count('ignored')} ignored (a file orbax does not "
               f"read; state verified intact). PyTorch weights: tests/models/test_torch_import.py::"
               f"test_malicious_pickle_is_refused_and_never_runs (3 pickle forms refused by "
               f"torch.load(weights_only=True))",
        test="tests/reliability/test_security.py",
    )


# Calls that can run code from a file's contents, and the one allowed use of each.
_DANGEROUS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
    "dill.load", "dill.loads", "marshal.load", "marshal.loads", "shelve.open", "yaml.load",
    "yaml.unsafe_load", "eval", "exec", "jax.numpy.load", "jnp.load",
}
_ALLOWED = {
    # Config files are Python by design (``get_config()``): the user's own code, like a script.
    ("jaxcnn/launch.py", "module_spec.loader.exec_module"),
}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_code_path_unpickles_or_evaluates_file_contents():
    problems = []
    package = ROOT / "jaxcnn"
    for path in sorted(package.rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        for node, name in _calls(path):
            keywords = {k.arg: k.value for k in node.keywords}
            if name in _DANGEROUS:
                problems.append(f"{relative}:{node.lineno}: {name}(...)")
            elif name.endswith("exec_module") and (relative, name) not in _ALLOWED:
                problems.append(f"{relative}:{node.lineno}: {name}(...)")
            elif name == "torch.load":
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    problems.append(f"{relative}:{node.lineno}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                allow = keywords.get("allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    problems.append(f"{relative}:{node.lineno}: np.load(allow_pickle=...)")
    record(
        "source scan: no unpickling / eval of file contents in jaxcnn/",
        trials=1,
        detail=f"{len(list(package.rglob('*.py')))} files: torch.load only with weights_only=True; no "
               "pickle/marshal/yaml.load/eval/exec; the only "
               "exec_module is jaxcnn/launch.py loading the user's own config file (Python by design)",
        test="tests/reliability/test_security.py",
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_weights_importer_refuses_pickles_under_every_torch_suffix(tmp_path, suffix):
    """The torch importer is tested with .pth; every suffix it accepts goes the same safe way."""
    pytest.importorskip("torch")
    from jaxcnn.models import read_state_dict

    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()
