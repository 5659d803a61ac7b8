"""CPU planning of the training workers (no Ray): CPU is kept for the data stages that feed training,
an unset cpus_per_worker is lowered to fit, an explicit one that leaves nothing is one line."""

from __future__ import annotations

import pytest

from pipelines.training.loop import plan_worker_cpus
from sseg.errors import SsegError


def test_unset_cpus_per_worker_is_one_when_it_fits():
    assert plan_worker_cpus(1, None, data_cpus=1, cluster_cpus=2) == (1.0, None)
    assert plan_worker_cpus(4, None, data_cpus=1, cluster_cpus=16) == (1.0, None)


def test_unset_cpus_per_worker_is_lowered_to_leave_the_data_cpus():
    cpus, note = plan_worker_cpus(2, None, data_cpus=1, cluster_cpus=2)
    assert cpus == 0.5
    assert note == ("2 training workers get 0.5 CPU each, keeping 1 of the cluster's 2 CPU for the data "
                    "stages (train.cpus_per_worker to choose)")
    cpus, _ = plan_worker_cpus(3, None, data_cpus=1, cluster_cpus=2)
    assert cpus == 0.33 and 3 * cpus + 1 <= 2


def test_explicit_cpus_per_worker_that_starves_the_data_stages_is_refused_in_one_line():
    with pytest.raises(SsegError) as err:
        plan_worker_cpus(2, 1.0, data_cpus=1, cluster_cpus=2)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("train.num_workers=2 x train.cpus_per_worker=1 CPU leave 0 of the cluster's 2 CPU")
    assert message.endswith("set train.cpus_per_worker=0.5 or leave it unset")
    assert plan_worker_cpus(2, 0.5, data_cpus=1, cluster_cpus=2) == (0.5, None)
    assert plan_worker_cpus(2, 1.0, data_cpus=0, cluster_cpus=2) == (1.0, None)  # data_cpus=0: the user's call


def test_no_room_at_all_is_refused():
    with pytest.raises(SsegError, match="cannot hold 2 training worker"):
        plan_worker_cpus(2, None, data_cpus=2, cluster_cpus=2)
    with pytest.raises(SsegError, match="use fewer workers"):
        plan_worker_cpus(2, 0.5, data_cpus=2, cluster_cpus=2)


# ---- stall detection (no Ray: a fake trainer and a fake progress snapshot) ----------------------------


class _BlockingTrainer:
    """fit() waits like a starved Ray Train run: forever (here at most 30 s)."""

    def __init__(self):
        self.interrupted = False

    def fit(self):
        import time

        deadline = time.time() + 30
        try:
            while time.time() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        return "finished"


def _waiting_for_data(now: float, since: float) -> dict:
    return {"now": now, "started": since - 5, "last_change": since,
            "workers": {0: (0, "data", since), 1: (0, "data", since)}}


@pytest.fixture()
def default_sigint():
    """The stall watch interrupts the main thread with a simulated SIGINT, which the process's SIGINT
    handler receives: in a real run Ray Train's (it aborts the run), here Python's default (it raises
    KeyboardInterrupt in the fake trainer). Earlier tests in the session (Ray Train runs) leave their
    handler installed, so the default one is put back for this test."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_run_without_progress_is_stopped_with_the_starved_stage_named(default_sigint):
    import time

    from pipelines.training.loop import describe_stall, fit_watched

    trainer, started = _BlockingTrainer(), time.time()

    def describe(snapshot):
        return describe_stall(snapshot, 1.0, data_stages="ReadParquet → MapBatches(CropCachedSamples)",
                              num_workers=2, worker_resources={"CPU": 1.0}, total={"CPU": 2.0}, free={"CPU": 0.0})

    with pytest.raises(SsegError) as err:
        fit_watched(trainer, lambda: _waiting_for_data(time.time(), started), 1.0, describe)
    assert trainer.interrupted and time.time() - started < 10
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no training progress for ") and "(train.stall_timeout_s=1)" in message
    assert ("every training worker has waited" in message and "for its next batch after step 0: the data "
            "stages feeding training are starved (ReadParquet → MapBatches(CropCachedSamples))" in message)
    assert message.endswith("the cluster has 0 of 2 CPU free, the 2 training worker(s) asked for 2")


def test_a_run_that_progresses_is_not_stopped():
    import time

    from pipelines.training.loop import fit_watched

    class Quick:
        def fit(self):
            time.sleep(2.5)
            return "finished"

    # every poll sees a fresh phase change: no stall however long the run
    assert fit_watched(Quick(), lambda: _waiting_for_data(time.time(), time.time()), 1.0, str) == "finished"
    assert fit_watched(Quick(), None, 1.0, str) == "finished"  # no monitor: plain fit


def test_stall_messages_name_what_the_workers_were_doing():
    from pipelines.training.loop import describe_stall

    kwargs = dict(data_stages="S", num_workers=2, worker_resources={"CPU": 1.0}, total={"CPU": 4.0},
                  free={"CPU": 2.0})
    never = describe_stall({"now": 100.0, "started": 0.0, "last_change": 0.0, "workers": {}}, 60, **kwargs)
    assert "2 of 2 training worker(s) never started" in never and "no training progress for 100 s" in never
    stuck = describe_stall({"now": 100.0, "started": 0.0, "last_change": 10.0,
                            "workers": {0: (7, "step", 10.0), 1: (7, "data", 5.0)}}, 60, **kwargs)
    assert "rank 0 has been in its training step 90 s at step 7" in stuck and "1 worker(s) wait for data" in stuck
