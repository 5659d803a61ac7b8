"""The training loop's early first batch: epoch 0's data starts while the step builds the model (issue 25)."""

import threading
import time

import pytest

from pipelines.training.loop import LoopSettings, _batch_options, _FirstBatch


def test_first_batch_is_pulled_in_the_background_and_every_batch_comes_once_in_order():
    started = threading.Event()

    def batches():
        started.set()
        yield from range(5)

    early = _FirstBatch(batches())
    assert started.wait(5)  # the pull began before anyone asked for a batch
    assert list(early.batches()) == [0, 1, 2, 3, 4]


def test_an_empty_source_gives_no_batch_and_an_error_reaches_the_training_thread():
    assert list(_FirstBatch(iter(())).batches()) == []

    def broken():
        time.sleep(0.05)
        raise ValueError("corrupt shard")
        yield  # pragma: no cover

    batches = _FirstBatch(broken()).batches()  # nothing waits yet: the loop beats "waiting for data" first
    with pytest.raises(ValueError, match="corrupt shard"):
        next(batches)


def test_batch_options_seed_the_local_shuffle_per_epoch_only_with_seeded_data():
    settings = LoopSettings(step_builder=None, config={}, total_steps=1, warmup_steps=0, global_batch_size=8,
                            log_every=1, checkpoint_every=1, shuffle_buffer=64, threads=1, mlflow_run_id=None,
                            tracking_uri="", run_dir="", data_seed=3)
    assert _batch_options(settings, 4, 2)["local_shuffle_seed"] == 3002
    assert _batch_options(settings, 4, 2)["batch_size"] == 4
    settings.data_seed = None
    assert _batch_options(settings, 4, 2)["local_shuffle_seed"] is None
    settings.data_seed, settings.shuffle_buffer = 3, 0
    assert _batch_options(settings, 4, 0)["local_shuffle_buffer_size"] is None
    assert _batch_options(settings, 4, 0)["local_shuffle_seed"] is None
