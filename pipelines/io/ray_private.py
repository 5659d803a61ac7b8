"""Every use of a private Ray API, in one place. Ray has no public equivalent for these; each accessor
names the attribute it reads so that ``tests/test_ray_private.py`` fails by that name when a Ray upgrade
removes or renames it. Nothing else in the project reaches into Ray's internals."""

from __future__ import annotations

import logging

# (what, where): checked by tests/test_ray_private.py against the installed Ray
PRIVATE_APIS = (
    ("DataContext._execution_idx", "ray.data.DataContext"),
    ("Dataset._logical_plan.dag", "ray.data.Dataset"),
    ("ray.train.v2._internal.execution.context", "module"),
    ("ray.data._internal.datasource.webdataset_datasource", "module"),
)


def execution_index() -> int:
    """How many times the current dataset has been executed before: Ray Data counts executions in the
    DataContext that travels with every task (its own seeded random ops use the same counter), one per
    training epoch. No public accessor exists (Ray 2.x)."""
    from ray.data import DataContext

    return int(getattr(DataContext.get_current(), "_execution_idx", 0))


def operator_names(dataset) -> list[str]:
    """The names of a Ray Dataset's logical operators, source first (``ReadParquet``,
    ``MapBatches(CropCachedSamples)``). Raises AttributeError when the private plan is gone."""
    names, op = [], dataset._logical_plan.dag
    while op is not None:
        names.append(op.name)
        op = op.input_dependencies[0] if op.input_dependencies else None
    return list(reversed(names))


def quiet_train_report_log() -> None:
    """Ray Train (v2) logs every ``ray.train.report`` with its full metrics dict at INFO from this
    module's logger; raise it to WARNING (the loop prints its own progress line)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def webdataset_internals():
    """(WebDatasetDatasource, _group_by_keys, _tar_file_iterator) of Ray Data's WebDataset reader, which the
    shard source extends to count corrupt members instead of failing on them."""
    from ray.data._internal.datasource.webdataset_datasource import (WebDatasetDatasource, _group_by_keys,
                                                                     _tar_file_iterator)

    return WebDatasetDatasource, _group_by_keys, _tar_file_iterator
