"""The CPU plan counts every Ray Data stage that holds a CPU (issue 24, defect 8): the shard read tasks
of the streaming source need a whole CPU beside the CPU pseudo-mask actors and the training workers, so
a plan that only reserves ``train.data_cpus`` passed and the read waited forever. No Ray here."""

from __future__ import annotations

import pytest

from pipelines.runs.pretrain import data_stages
from pipelines.training.loop import DataStageCpus, data_stage_need, plan_worker_cpus
from sseg.errors import SsegError


def test_the_issue_command_is_refused_at_once_naming_the_read_stage():
    """configs/sseg_cc12m.yaml on one 2-CPU machine: 1 CPU pseudo-mask actor, train.cpus_per_worker=0.5,
    train.data_cpus=0.5 (the run's own planning: data_cpus + the actors, and the stages)."""
    stages = data_stages(stream=True, cpu_actors=1)
    assert data_stage_need(stages) == 2.0  # the actor's CPU + one read task's CPU
    with pytest.raises(SsegError) as err:
        plan_worker_cpus(1, 0.5, data_cpus=0.5 + 1, cluster_cpus=2, stages=stages)
    message = str(err.value)
    assert "\n" not in message
    assert "need 2 CPU beside the training workers" in message
    assert "the shard read tasks (ReadTolerantWebDataset" in message.split(" so ")[1]  # the stage that waits
    assert "1 CPU pseudo-mask actor(s)" in message
    assert message.endswith("use a larger cluster (ray.num_cpus on one machine) or fewer CPU actors")
    # ray.num_cpus=4: the same run fits (the issue: it finishes its 2 steps in 70 s)
    assert plan_worker_cpus(1, 0.5, data_cpus=1.5, cluster_cpus=4, stages=stages) == (0.5, None)


def test_unset_workers_are_lowered_to_leave_what_the_stages_need():
    stages = data_stages(stream=True, cpu_actors=2)  # 2 held + 1 read task = 3
    cpus, note = plan_worker_cpus(2, None, data_cpus=1 + 2, cluster_cpus=4, stages=stages)
    assert cpus == 0.5 and "keeping 3 of the cluster's 4 CPU" in note
    with pytest.raises(SsegError, match=r"need 3 CPU .*the shard read tasks"):
        plan_worker_cpus(1, None, data_cpus=0.5, cluster_cpus=3, stages=stages)
    with pytest.raises(SsegError, match=r"set train.cpus_per_worker=0.5 or leave it unset"):
        plan_worker_cpus(2, 1.0, data_cpus=0.5, cluster_cpus=4, stages=stages)


def test_a_reserve_below_one_task_is_raised_to_it_and_data_cpus_zero_stays_the_users_call():
    stages = data_stages(stream=False, cpu_actors=0)  # the cache's read/crop tasks, 1 CPU each
    with pytest.raises(SsegError, match=r"ReadParquet"):
        plan_worker_cpus(1, 1.5, data_cpus=0.5, cluster_cpus=2, stages=stages)
    assert plan_worker_cpus(1, 1.0, data_cpus=0.5, cluster_cpus=2, stages=stages) == (1.0, None)
    assert plan_worker_cpus(2, 1.0, data_cpus=0, cluster_cpus=2, stages=stages) == (1.0, None)
    task, pool = DataStageCpus("t", 1.0), DataStageCpus("p", 2.0, held=True)
    assert data_stage_need([task, pool, DataStageCpus("u", 0.5)]) == 3.0
