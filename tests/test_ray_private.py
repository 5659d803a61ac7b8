"""The private Ray APIs the project uses (pipelines/io/ray_private.py) still exist in the installed Ray:
a Ray upgrade that removes one fails here, by name, instead of somewhere inside a run."""

from __future__ import annotations

import importlib

import pytest

from pipelines.io import ray_private


def test_every_private_api_is_listed_and_checked():
    assert {what for what, _ in ray_private.PRIVATE_APIS} == {
        "DataContext._execution_idx", "Dataset._logical_plan.dag",
        "ray.train.v2._internal.execution.context", "ray.data._internal.datasource.webdataset_datasource"}


@pytest.mark.parametrize("module", ["ray.train.v2._internal.execution.context",
                                    "ray.data._internal.datasource.webdataset_datasource"])
def test_private_module_exists(module):
    importlib.import_module(module)


def test_webdataset_internals_exist():
    datasource, group_by_keys, tar_iterator = ray_private.webdataset_internals()
    assert callable(group_by_keys) and callable(tar_iterator) and isinstance(datasource, type)


def test_data_context_execution_index_exists():
    from ray.data import DataContext

    assert hasattr(DataContext.get_current(), "_execution_idx"), "DataContext._execution_idx is gone"
    assert isinstance(ray_private.execution_index(), int)


def test_dataset_logical_plan_names_the_operators(ray_session):
    import ray

    ds = ray.data.range(4).map_batches(lambda b: b, batch_format="numpy")
    assert hasattr(ds, "_logical_plan"), "Dataset._logical_plan is gone"
    names = ray_private.operator_names(ds)
    assert names[0].startswith("Read") and names[-1].startswith("MapBatches"), names


def test_quiet_train_report_log_runs():
    ray_private.quiet_train_report_log()
