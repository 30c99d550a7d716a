"""``import jaxcnn.functional`` loads jax and numpy only: no Flax, no modules, no CPU backend."""

import json
import subprocess
import sys


def test_functional_imports_jax_and_numpy_only():
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import jaxcnn.functional\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    jaxcnn_modules = {name for name in json.loads(done.stdout) if name.startswith("jaxcnn")}
    for forbidden in ("flax", "optax", "torch", "ml_collections", "orbax"):
        assert forbidden not in loaded, forbidden
    assert not {"jaxcnn.nn", "jaxcnn.summary", "jaxcnn.compilation", "jaxcnn.backends", "jaxcnn.models",
                "jaxcnn.train"} & jaxcnn_modules, jaxcnn_modules
    assert "jax" in loaded and "numpy" in loaded
