"""Small helpers every job shares: subcommands and the results table a comparison run logs."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import job_parser, take_subcommand
from pipelines.evaluation.report import save_table
from sseg.errors import ConfigError


def _args(*argv: str):
    parser = job_parser("test")
    parser.add_argument("--resume")
    return parser.parse_args(list(argv))


def test_subcommand_is_taken_from_the_overrides_and_refuses_resume() -> None:
    args = _args("ablation", "train.seed=1")
    assert take_subcommand(args, "ablation") and args.overrides == ["train.seed=1"]
    args = _args("train.seed=1")
    assert not take_subcommand(args, "ablation") and args.overrides == ["train.seed=1"]
    with pytest.raises(ConfigError, match="'ablation' starts new ones"):
        take_subcommand(_args("ablation", "--resume", "latest"), "ablation")


class _Tracker:
    def __init__(self) -> None:
        self.artifacts: list[str] = []

    def log_artifact(self, path, artifact_path=None) -> None:
        self.artifacts.append(str(path))


def test_save_table_prints_writes_and_logs_markdown_and_json(tmp_path, capsys) -> None:
    tracker = _Tracker()
    rows = [{"row": "baseline", "miou": 0.25}]
    path = save_table(tracker, tmp_path / "out", "ablation", "| row | mIoU |", rows)
    assert path == tmp_path / "out" / "ablation.md" and path.read_text() == "| row | mIoU |\n"
    assert json.loads((tmp_path / "out" / "ablation.json").read_text()) == rows
    assert tracker.artifacts == [str(path), str(tmp_path / "out" / "ablation.json")]
    assert capsys.readouterr().out == "| row | mIoU |\n"
