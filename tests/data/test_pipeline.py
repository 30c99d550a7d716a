"""BatchLoader: determinism, resumption, sharding over processes, last-batch policies."""

import json

import numpy as np
import pytest

from jaxcnn.data import BatchLoader, epoch_permutation


def labels(batches):
    return [b["label"][b["mask"]].tolist() for b in batches]


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def loader(source, batch_size=8, **kwargs):
    kwargs.setdefault("shard_index", 0)
    kwargs.setdefault("shard_count", 1)
    return BatchLoader(source, batch_size, **kwargs)


def test_batch_layout_on_mnist(mnist_train):
    it = iter(loader(mnist_train, 128, seed=0))
    batch = next(it)
    assert batch["image"].shape == (128, 28, 28, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (128,) and batch["label"].dtype == np.int32
    assert batch["mask"].dtype == np.bool_ and batch["mask"].all()
    # Label alignment: every row is the example the permutation names.
    order = epoch_permutation(60_000, 0, 0)[:128]
    np.testing.assert_array_equal(batch["image"], mnist_train.images[order])
    np.testing.assert_array_equal(batch["label"], mnist_train.labels[order])


def test_same_seed_same_batches_different_seed_differs(index_source):
    source = index_source(50)
    a = labels(take(iter(loader(source, seed=3)), 12))
    b = labels(take(iter(loader(source, seed=3)), 12))
    c = labels(take(iter(loader(source, seed=4)), 12))
    assert a == b and a != c


def test_each_epoch_is_a_fresh_permutation(index_source):
    source = index_source(40)
    ld = loader(source, seed=0, num_epochs=3)
    assert ld.steps_per_epoch == 5 and len(ld) == 15
    batches = labels(ld)
    epochs = [sum(batches[e * 5 : (e + 1) * 5], []) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(40))
    assert epochs[0] != epochs[1] != epochs[2]


def test_no_shuffle_keeps_order(index_source):
    batches = labels(loader(index_source(20), 8, shuffle=False, num_epochs=1, last_batch="partial"))
    assert batches == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


@pytest.mark.parametrize("k", [3, 7, 11])
def test_resume_mid_epoch_equals_uninterrupted(index_source, k):
    source = index_source(45)
    ld = loader(source, 8, seed=5, num_epochs=3, last_batch="pad")
    full = labels(ld)
    it = iter(ld)
    take(it, k)
    state = json.loads(json.dumps(it.get_state()))  # Survives a JSON checkpoint.
    assert state["step"] == k and state["epoch"] == k // ld.steps_per_epoch
    resumed = iter(loader(source, 8, seed=5, num_epochs=3, last_batch="pad"))
    resumed.set_state(state)
    assert labels(resumed) == full[k:]


def test_set_state_rejects_another_configuration(index_source):
    it = iter(loader(index_source(30), 8, seed=1))
    next(it)
    state = it.get_state()
    other = iter(loader(index_source(30), 8, seed=2))
    with pytest.raises(ValueError, match="seed: state has 1, loader has 2"):
        other.set_state(state)
    with pytest.raises(TypeError, match="state must be a dict"):
        other.set_state(b"\x00")


@pytest.mark.parametrize("processes", [2, 4])
@pytest.mark.parametrize("n", [64, 61])
def test_sharding_covers_every_example_once(index_source, processes, n):
    """Per epoch, the real (masked) examples of all processes are each example exactly once."""
    source = index_source(n)
    per_process = []
    for p in range(processes):
        ld = BatchLoader(source, 16, seed=9, num_epochs=2, last_batch="pad", shard_index=p, shard_count=processes)
        assert ld.local_batch_size == 16 // processes
        per_process.append(list(ld))
    steps = len(per_process[0])
    assert all(len(batches) == steps for batches in per_process)  # Lock-step across hosts.
    spe = -(-n // 16)
    for epoch in range(2):
        seen = []
        for batches in per_process:
            for b in batches[epoch * spe : (epoch + 1) * spe]:
                assert b["image"].shape[0] == 16 // processes
                seen += b["label"][b["mask"]].tolist()
        assert sorted(seen) == list(range(n))


def test_global_batch_does_not_depend_on_process_count(index_source):
    source = index_source(100)
    single = labels(take(iter(loader(source, 12, seed=2)), 5))
    split = [labels(take(iter(BatchLoader(source, 12, seed=2, shard_index=p, shard_count=3)), 5)) for p in range(3)]
    assert single == [sum((split[p][s] for p in range(3)), []) for s in range(5)]


def test_drop_policy(index_source):
    ld = loader(index_source(30), 8, seed=0, num_epochs=1, last_batch="drop")
    batches = labels(ld)
    assert ld.steps_per_epoch == 3 and [len(b) for b in batches] == [8, 8, 8]
    assert len(set(sum(batches, []))) == 24


def test_pad_policy(index_source):
    ld = loader(index_source(30), 8, seed=0, num_epochs=1, last_batch="pad")
    batches = list(ld)
    last = batches[-1]
    assert len(batches) == 4 and last["image"].shape == (8, 2, 2, 1)
    assert last["mask"].tolist() == [True] * 6 + [False] * 2
    assert (last["image"][~last["mask"]] == 0).all()


def test_endless_iteration_and_random_access(index_source):
    ld = loader(index_source(20), 8, seed=0)
    assert ld.num_steps is None
    it = iter(ld)
    batches = take(it, 9)  # Past several epochs.
    assert it.step == 9 and it.epoch == 9 // ld.steps_per_epoch
    np.testing.assert_array_equal(ld.batch(7)["label"], batches[7]["label"])
    with pytest.raises(TypeError, match="len"):
        len(ld)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(batch_size=0), ValueError, "batch_size must be a positive int, got 0"),
        (dict(batch_size=2.0), TypeError, "batch_size must be an int"),
        (dict(batch_size=10, shard_count=4, shard_index=0), ValueError, "divisible by shard_count=4"),
        (dict(batch_size=8, shard_count=2, shard_index=2), ValueError, "shard_index=2 must be < shard_count=2"),
        (dict(batch_size=8, last_batch="keep"), ValueError, "last_batch='keep'"),
        (dict(batch_size=8, shard_count=2, shard_index=0, last_batch="partial"), ValueError, "'partial'"),
        (dict(batch_size=64), ValueError, "exceeds the 20 examples"),
        (dict(batch_size=8, seed=-1), ValueError, "seed must be a non-negative int"),
    ],
)
def test_argument_errors(index_source, kwargs, error, match):
    kwargs.setdefault("shard_index", 0)
    kwargs.setdefault("shard_count", 1)
    with pytest.raises(error, match=match):
        BatchLoader(index_source(20), **kwargs)


def test_worker_processes_give_the_same_batches(index_source):
    source = index_source(30)
    expected = labels(loader(source, 8, seed=1, num_epochs=2))
    it = iter(loader(source, 8, seed=1, num_epochs=2, worker_count=1))
    it.set_state({**it.get_state(), "step": 2})
    assert labels(it) == expected[2:]
