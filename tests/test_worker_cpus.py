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
