"""Damaged checkpoints, a full disk and a read-only workdir: clear errors, nothing lost.

* Every file of the latest checkpoint is in turn bit-flipped, truncated and deleted (and each
  item folder removed, and a digit of the iterator state changed): a restore either gives the
  saved state back bit for bit (the file was not needed) or warns, naming the step and the
  problem, and falls back to the previous checkpoint -- never an exception, never silently
  different values. The training loop does the same and still ends exactly like a run that
  was never damaged.
* Disk full: a real tmpfs filled up during training (where this machine lets root mount one),
  and orbax's "No space left on device" error injected at the write layer (everywhere).
* Read-only workdir: a tmpfs remounted read-only during training (root), or ``chmod a-w``
  (other users; root ignores permission bits).

Each ends with a clear error naming the file or step, every earlier checkpoint intact, and a
rerun of the same call, once the fault is gone, identical to the undamaged run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fault_tools import (
    FaultSource,
    has_checkpoint,
    final_state,
    is_writable,
    record,
    remount,
    run_tiny,
    tiny_model,
    tiny_sources,
    trees_equal,
    try_mount_tmpfs,
    unmount,
)

from jaxcnn.train import (
    Checkpointer,
    CheckpointWriteError,
    CorruptCheckpointError,
    create_train_state,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The undamaged run: 8 steps, checkpoints 2, 4, 6, 8."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = run_tiny(workdir)
    return workdir, result


def _same_as_reference(workdir: Path, result: dict, reference) -> list[str]:
    ref_dir, ref_result = reference
    differ = []
    if result != ref_result:
        differ.append("final result")
    if (workdir / "metrics.jsonl").read_bytes() != (ref_dir / "metrics.jsonl").read_bytes():
        differ.append("metrics.jsonl")
    if not trees_equal(final_state(workdir), final_state(ref_dir)):
        differ.append("final checkpoint")
    return differ


# ----------------------------------------------------------------------------- damaged checkpoints


def _two_states():
    import optax

    state = create_train_state(tiny_model(), optax.adam(1e-3), jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    one = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    two = jax.tree.map(lambda x: x * 3 - 2 if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    return one, two


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flip a byte":
        damaged = bytearray(data)
        damaged[len(data) // 2] ^= 0x5A
        path.write_bytes(bytes(damaged))
    elif how == "flip the first byte":
        damaged = bytearray(data)
        damaged[0] ^= 0x01
        path.write_bytes(bytes(damaged))
    elif how == "truncate to half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "delete":
        path.unlink()
    else:
        raise ValueError(how)


def test_every_damaged_file_is_detected_or_harmless(tmp_path, caplog):
    one, two = _two_states()
    data_two = {"iterator": {"step": 12345, "seed": 0}, "train_window": {"loss": 0.5}}
    base = tmp_path / "base"
    with Checkpointer(base, async_save=False) as ckpt:
        ckpt.save(1, one, data_state={"iterator": {"step": 1}}, config={"seed": 0})
        ckpt.save(2, two, data_state=data_two, config={"seed": 0})
    files = sorted(p.relative_to(base) for p in (base / "2").rglob("*") if p.is_file())
    assert len(files) >= 8, files
    cases = [(f, how) for f in files for how in ("flip a byte", "flip the first byte", "truncate to half", "delete")]
    cases += [(Path("2") / item, "delete the folder") for item in ("state", "data", "config", "integrity")]
    cases += [(Path("2/data/metadata"), "change a digit")]
    outcomes = {"detected": 0, "harmless": 0}
    failures = []
    for i, (relative, how) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        shutil.copytree(base, folder)
        target = folder / relative
        if how == "delete the folder":
            shutil.rmtree(target)
        elif how == "change a digit":
            target.write_bytes(target.read_bytes().replace(b"12345", b"12346"))
        else:
            _damage(target, how)
        caplog.clear()
        try:
            with caplog.at_level(logging.WARNING, logger="jaxcnn.train"):
                with Checkpointer(folder, async_save=False) as ckpt:
                    restored = ckpt.restore(jax.tree.map(jnp.zeros_like, one))
                    left = ckpt.all_steps()
        except Exception as err:  # noqa: BLE001 - any exception here is a failure of the contract
            failures.append(f"{relative} ({how}): {type(err).__name__}: {err}")
            continue
        if restored.step == 2:
            if not (trees_equal(restored.state, two) and restored.data_state == data_two):
                failures.append(f"{relative} ({how}): step 2 restored with silently different values")
            else:
                outcomes["harmless"] += 1
        else:
            warned = [r.getMessage() for r in caplog.records if "step 2" in r.getMessage()]
            ok = (
                restored.step == 1
                and trees_equal(restored.state, one)
                and [s for s, _ in restored.skipped] == [2]
                and "checkpoint of step 2" in restored.skipped[0][1]
                and warned
                and left == [1]  # moved aside: the run will write step 2 again
                and (folder / "2.corrupt").is_dir()
            )
            if ok:
                outcomes["detected"] += 1
            else:
                failures.append(f"{relative} ({how}): fallback wrong: step {restored.step}, {restored.skipped}, {warned}")
        shutil.rmtree(folder)
    record(
        "corrupted checkpoint file (every file of the latest checkpoint flipped / truncated / deleted)",
        trials=len(cases),
        survived=len(cases) - len(failures),
        lost="nothing" if not failures else f"{len(failures)} case(s): {failures[:3]}",
        detail=f"{outcomes['detected']} detected (warning naming step 2 and the problem, fell back to step 1, "
               f"step 2 moved to 2.corrupt), {outcomes['harmless']} harmless (a file orbax does not read: "
               f"step 2 restored and verified bit for bit); {len(files)} files, 4 damages each, plus each item "
               f"folder deleted and one digit of the iterator state changed",
        test="tests/reliability/test_checkpoint_faults.py",
    )
    assert not failures, "\n".join(failures)
    assert outcomes["detected"] >= 10


def test_explicit_step_and_all_corrupt_give_clear_errors(tmp_path):
    one, two = _two_states()
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, one)
        ckpt.save(2, two)
    for step in (1, 2):
        data_files = sorted((tmp_path / str(step) / "state").rglob("manifest.ocdbt"))
        _damage(data_files[0], "truncate to half")
    with Checkpointer(tmp_path, async_save=False, read_only=True) as ckpt:
        with pytest.raises(CorruptCheckpointError, match=r"checkpoint of step 1 in .* is corrupt: it does not read back"):
            ckpt.restore(one, step=1)
        with pytest.raises(CorruptCheckpointError, match=r"(?s)no checkpoint in .* reads back intact.*step 2.*step 1.*Move the folder away"):
            ckpt.restore(one)
        with pytest.raises(CorruptCheckpointError, match="step 2"):
            ckpt.restore_params()
    # Read-only: nothing was moved aside.
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]
    # Another model's checkpoint is a usage error, not corruption: no fallback, a ValueError naming the arrays.
    other = tmp_path / "other"
    with Checkpointer(other, async_save=False) as ckpt:
        ckpt.save(1, one)
    import optax

    bigger = create_train_state(tiny_model(12), optax.adam(1e-3), jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    with Checkpointer(other, async_save=False) as ckpt:
        with pytest.raises(ValueError, match=r"another structure.*params/Dense_0/bias: saved \(10,\), wanted \(12,\)"):
            ckpt.restore(bigger)
    record("restore of a corrupt explicit step / of a folder where every checkpoint is corrupt / of another model's "
           "checkpoint", trials=3, detail="CorruptCheckpointError naming the step(s) and the problem; ValueError "
           "naming the arrays of another shape", test="tests/reliability/test_checkpoint_faults.py")


def test_training_resumes_from_the_previous_checkpoint_when_the_latest_is_corrupt(reference, tmp_path, capsys):
    ref_dir, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    # Damage the two newest checkpoints differently: 8 loses a data file, 6 gets a flipped byte.
    for victim in (workdir / "checkpoints" / "8" / "state" / "d").iterdir():
        victim.unlink()
    _damage(next((workdir / "checkpoints" / "6" / "state").rglob("manifest.ocdbt")), "flip a byte")
    result = run_tiny(workdir)
    out = capsys.readouterr().out
    assert "Resuming from the checkpoint of step 4" in out
    assert "Skipped the newer checkpoint of step 8: checkpoint of step 8 in" in out
    assert "Skipped the newer checkpoint of step 6" in out
    assert {"8.corrupt", "6.corrupt"} <= set(os.listdir(workdir / "checkpoints"))
    differ = _same_as_reference(workdir, result, reference)
    with Checkpointer(workdir / "checkpoints", read_only=True, async_save=False) as ckpt:
        assert ckpt.all_steps() == [2, 4, 6, 8]
        for step in ckpt.all_steps():
            ckpt.verify(step)
    record(
        "training resumed on a workdir whose two newest checkpoints are corrupt",
        trials=1,
        survived=0 if differ else 1,
        lost="nothing" if not differ else f"{differ} differ",
        detail="warned naming steps 8 and 6, resumed from step 4, rewrote 6 and 8; metrics.jsonl, final "
               "checkpoint and result identical to the undamaged run",
        test="tests/reliability/test_checkpoint_faults.py",
    )
    assert not differ, differ


# ----------------------------------------------------------------------------- disk full


def _check_disk_fault(err: BaseException, workdir: Path, expected_errno: int) -> None:
    """The error is an OSError with the right errno whose message names a path in the workdir."""
    assert isinstance(err, OSError), repr(err)
    assert err.errno == expected_errno, repr(err)
    assert str(workdir) in str(err), str(err)


def _intact_checkpoints(workdir: Path) -> list[int]:
    with Checkpointer(workdir / "checkpoints", read_only=True, async_save=False) as ckpt:
        steps = ckpt.all_steps()
        for step in steps:
            ckpt.verify(step)
            variables = ckpt.restore_variables(step)
            assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables["params"]))
    return steps


def test_disk_full_on_a_real_tmpfs(reference, tmp_path):
    mount = tmp_path / "small_disk"
    if not try_mount_tmpfs(mount, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission); see the injected test")
    try:
        workdir = mount / "run"
        filler = mount / "filler"

        def fill_the_disk():
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
                except OSError:
                    pass

        train, test = tiny_sources()
        # Fill the disk once checkpoint 4 is written.
        with pytest.raises(OSError) as failure:
            run_tiny(workdir, train=FaultSource(train, has_checkpoint(workdir, 4), fill_the_disk), test=test)
        _check_disk_fault(failure.value, workdir, errno.ENOSPC)
        intact = _intact_checkpoints(workdir)
        assert intact and max(intact) < 8
        filler.unlink()  # free the space; the same call again
        result = run_tiny(workdir)
        differ = _same_as_reference(workdir, result, reference)
        record(
            "disk full during training (1 MiB tmpfs filled up)",
            trials=1,
            survived=0 if differ else 1,
            lost="nothing" if not differ else f"{differ} differ",
            detail=f"{type(failure.value).__name__}: {str(failure.value)[:160]}... ; checkpoints {intact} intact; "
                   f"after freeing space the rerun ended identical to the undamaged run",
            test="tests/reliability/test_checkpoint_faults.py",
        )
        assert not differ, differ
    finally:
        unmount(mount)


def test_disk_full_injected_at_the_checkpoint_write(reference, tmp_path, monkeypatch):
    """Orbax's own error for ENOSPC (what a full disk gives, see the tmpfs test), on the 3rd save."""
    import orbax.checkpoint as ocp

    original = ocp.CheckpointManager.save
    calls = {"n": 0}

    def failing_save(self, step, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError(
                f'RESOURCE_EXHAUSTED: Error writing "params.Dense_0.bias/0" in OCDBT database at local file '
                f'"{self.directory}/{step}.orbax-checkpoint-tmp/state/": Failed to write 4096 bytes to '
                f"file 7: No space left on device [os_error_code='28']"
            )
        return original(self, step, *args, **kwargs)

    workdir = tmp_path / "run"
    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    with pytest.raises(CheckpointWriteError) as failure:
        run_tiny(workdir)
    message = str(failure.value)
    assert failure.value.errno == errno.ENOSPC
    assert "could not write the checkpoint of step 6" in message and "No space left on device" in message
    assert "Earlier checkpoints are intact: steps [2, 4]" in message and "resume from step 4" in message
    assert _intact_checkpoints(workdir) == [2, 4]
    monkeypatch.setattr(ocp.CheckpointManager, "save", original)
    result = run_tiny(workdir)
    differ = _same_as_reference(workdir, result, reference)
    record(
        "disk full at a checkpoint write (orbax's ENOSPC error injected)",
        trials=1,
        survived=0 if differ else 1,
        lost="nothing" if not differ else f"{differ} differ",
        detail=f"CheckpointWriteError: {message[:200]}...; rerun identical to the undamaged run",
        test="tests/reliability/test_checkpoint_faults.py",
    )
    assert not differ, differ


# ----------------------------------------------------------------------------- read-only workdir


def _make_read_only(mount: Path, workdir: Path) -> str | None:
    """Makes ``workdir`` unwritable: remounts the tmpfs read-only (root) or chmods (others)."""
    if os.geteuid() == 0:
        return "tmpfs remounted read-only" if remount(mount, "ro") else None
    for path in [workdir, *workdir.rglob("*")]:
        if path.is_dir():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return "chmod a-w" if not is_writable(workdir) else None


def _make_writable(mount: Path, workdir: Path) -> None:
    if os.geteuid() == 0:
        assert remount(mount, "rw")
        return
    for path in [workdir, *workdir.rglob("*")]:
        if path.is_dir():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_read_only_workdir(reference, tmp_path):
    mount = tmp_path / "disk"
    mounted = os.geteuid() == 0 and try_mount_tmpfs(mount, "16m")
    if os.geteuid() == 0 and not mounted:
        pytest.skip("root cannot be kept from writing by chmod, and no tmpfs can be mounted here")
    try:
        workdir = mount / "run"
        how = {}

        def make_read_only():
            how["method"] = _make_read_only(mount, workdir)

        train, test = tiny_sources()
        with pytest.raises(OSError) as failure:
            run_tiny(workdir, train=FaultSource(train, has_checkpoint(workdir, 4), make_read_only), test=test)
        if how.get("method") is None:
            pytest.skip("could not make the workdir read-only here")
        expected = errno.EROFS if how["method"].startswith("tmpfs") else errno.EACCES
        _check_disk_fault(failure.value, workdir, expected)
        intact = _intact_checkpoints(workdir)
        assert intact
        # Starting again while it is still read-only: a clear error before any training.
        with pytest.raises(OSError) as again:
            run_tiny(workdir)
        _check_disk_fault(again.value, workdir, expected)
        assert _intact_checkpoints(workdir) == intact
        _make_writable(mount, workdir)
        result = run_tiny(workdir)
        differ = _same_as_reference(workdir, result, reference)
        record(
            f"workdir becomes read-only during training ({how['method']})",
            trials=2,
            survived=0 if differ else 2,
            lost="nothing" if not differ else f"{differ} differ",
            detail=f"during training: {type(failure.value).__name__}: {str(failure.value)[:150]}; at start: "
                   f"{type(again.value).__name__}: {str(again.value)[:150]}; checkpoints {intact} intact; "
                   f"writable again, the rerun ended identical to the undamaged run",
            test="tests/reliability/test_checkpoint_faults.py",
        )
        assert not differ, differ
    finally:
        if mounted:
            unmount(mount)
