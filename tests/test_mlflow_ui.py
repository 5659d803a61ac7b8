"""The MLflow compare-runs page renders two sseg runs (names, ids, params, metrics, lineage tags)
in headless Chromium, against a real MLflow tracking server started for the test.

Needs Debian's chromium (scripts/install_system_deps.sh). Without it the test is skipped, except
under CI=true, where a missing browser is a failure. The screenshot goes to tests/artifacts/ or
to $SSEG_TEST_ARTIFACTS.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pipelines.tracking import LINEAGE_TAG, STAGE_TAG, Tracker
from tests._mlflow_server import MlflowServer, running_mlflow_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("SSEG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXPERIMENT = "sseg-ui-compare"
RENDER_TIMEOUT_MS = 30_000


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("SSEG_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _under_ci() -> bool:
    """CI=true (what .ci/run exports; also 1/yes): a test that cannot run must fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _require_browser() -> None:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found (install it with scripts/install_system_deps.sh)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "python package 'playwright' is not installed (pip install -e .[dev])"
    if problem is None:
        return
    if _under_ci():
        pytest.fail(f"browser test cannot run under CI: {problem}")
    pytest.skip(problem)


def _log_two_runs(server: MlflowServer) -> dict[str, str]:
    """A pretraining run and an evaluation run that names it as its parent."""
    pretrain = Tracker(EXPERIMENT, run_name="pretrain-sseg-tiny", tags={STAGE_TAG: "pretrain"},
                       tracking_uri=server.url)
    pretrain.log_params({"optimizer.lr": 5e-4, "model.num_queries": 64})
    for step, loss in enumerate([2.0, 1.6, 1.3, 1.1, 0.8]):
        pretrain.log_metrics({"train.loss": loss}, step=step)
    pretrain.log_metrics({"eval.miou": 0.4125}, step=4)
    pretrain.end()

    evaluate = Tracker(EXPERIMENT, run_name="evaluate-voc-val",
                       tags={STAGE_TAG: "evaluate", LINEAGE_TAG: pretrain.run_id},
                       tracking_uri=server.url)
    evaluate.log_params({"optimizer.lr": 1e-4, "model.num_queries": 64})
    evaluate.log_metrics({"train.loss": 0.9, "eval.miou": 0.5031}, step=1)
    evaluate.end()

    experiment_id = evaluate.client.get_run(evaluate.run_id).info.experiment_id
    return {"pretrain": pretrain.run_id, "evaluate": evaluate.run_id, "experiment": experiment_id}


def compare_runs_url(base_url: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    # The form MLflow 3.x's own "Compare" button builds (Routes.getCompareRunPageRoute).
    return (f"{base_url}/#/compare-runs?runs={json.dumps(run_ids)}"
            f"&experiments={json.dumps(experiment_ids)}")


METRIC_ROW_JS = """([names, values, key]) => {
    const cells = g => [...g.querySelectorAll('[role=rowgroup] > *')];
    const named = cells(names).find(c => c.innerText.trim() === key);
    if (!named) return null;
    return [key, ...cells(values).filter(c => c.style.top === named.style.top)
                                 .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left))
                                 .map(c => c.innerText.trim())]; }"""


def metric_rows(page, keys, first_metric):
    """MLflow's compare page draws metrics as two virtualised grids (names | values, scrolled together):
    scroll through them and read each key's row as [key, value of run 1, value of run 2, ...]."""
    grids = page.locator("[role=grid]")
    index = next(i for i in range(grids.count()) if first_metric in grids.nth(i).inner_text().split())
    names, values = grids.nth(index).element_handle(), grids.nth(index + 1).element_handle()
    rows = {}
    for top in range(0, names.evaluate("g => g.scrollHeight"), 150):
        for grid in (names, values):
            grid.evaluate("(g, t) => { g.scrollTop = t; }", top)
        page.wait_for_timeout(150)
        for key in set(keys) - set(rows):
            row = page.evaluate(METRIC_ROW_JS, [names, values, key])
            if row:
                rows[key] = row
    return rows


def _live_members_of_group(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (from /proc/<pid>/stat)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                         ("", pytest.skip.Exception), ("false", pytest.skip.Exception)])
def test_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no-chromium not found"):
        _require_browser()


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_compare_page_shows_both_runs(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    with running_mlflow_server(tmp_path / "mlflow") as server:
        ids = _log_two_runs(server)
        url = compare_runs_url(server.url, [ids["pretrain"], ids["evaluate"]], [ids["experiment"]])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                # Tall enough for the run table, params, metrics and tags in one screenshot (the
                # page scrolls inside its own container, so full_page would not help).
                page = browser.new_page(viewport={"width": 1400, "height": 2200})
                page.goto(url)
                for text in ["Comparing 2 Runs from 1 Experiment", "evaluate-voc-val", LINEAGE_TAG]:
                    page.get_by_text(text).first.wait_for(timeout=RENDER_TIMEOUT_MS)
                body = page.inner_text("body")
                # Run details, params and tags are tables; metrics a virtualised grid.
                rows = {name: page.locator("tr", has_text=name).first.inner_text().split()
                        for name in ["Run Name:", "optimizer.lr", LINEAGE_TAG, STAGE_TAG]}
                page.screenshot(path=str(_artifacts_dir() / "mlflow_compare_runs.png"))
            finally:
                browser.close()

    for expected in ["pretrain-sseg-tiny", "evaluate-voc-val", ids["pretrain"], ids["evaluate"],
                     "eval.miou", "train.loss", "optimizer.lr", "model.num_queries",
                     STAGE_TAG, LINEAGE_TAG]:
        assert expected in body, f"{expected!r} missing from the compare page"
    assert rows["Run Name:"] == ["Run", "Name:", "pretrain-sseg-tiny", "evaluate-voc-val"]
    assert rows["optimizer.lr"] == ["optimizer.lr", "0.0005", "0.0001"]
    assert rows[STAGE_TAG] == [STAGE_TAG, "pretrain", "evaluate"]
    # Lineage: the evaluation run's tag names the pretraining run (the parent has no such tag).
    assert rows[LINEAGE_TAG] == [LINEAGE_TAG, ids["pretrain"]]
    # The metrics grid lists the names, then the latest value of each run row by row, rounded by
    # the page (0.4125 -> 0.413, 0.5031 -> 0.503); train.loss is each run's last step.
    metrics_section = body.split("\nMetrics\n", 1)[1].split("\nArtifacts", 1)[0]
    assert metrics_section.split("\n")[-6:] == ["eval.miou", "train.loss",
                                                 "0.413", "0.503", "0.8", "0.9"]
    # The server (and the uvicorn worker it spawned) is gone.
    if Path("/proc/self/stat").exists():
        assert _live_members_of_group(server.pid) == []
