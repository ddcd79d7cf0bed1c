"""Round tracking written for real and read back: TensorBoard event files (read with the
`tensorboard` package's own reader) and MLflow on a local file:// tracking URI."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resonfl_server.backend.models import Job, Round, RoundStatus, SiteResult
from resonfl_server.backend.services import tracking
from resonfl_server.backend.storage import ArtifactStore


def _round(number: int, top1: float) -> Round:
    return Round(
        job_id=7, number=number, status=RoundStatus.DONE, round_s=2.0 + number, train_s_max=1.5,
        overhead_s=0.5 + number, metrics={"global_top1": top1, "train_loss": 1.0 / (number + 1), "lr_end": 0.01},
    )  # fmt: skip


def _result(site: str, number: int) -> SiteResult:
    return SiteResult(
        job_id=7, round_num=number, site=site, samples=100, train_s=1.25, total_s=2.0,
        metrics={"train_loss": 0.5, "top1": 0.8, "val_loss": float("nan")},
        phases={"download_s": 0.25, "data_s": 0.1, "started_process": False},
    )  # fmt: skip


def test_event_files_hold_global_and_site_scalars_per_round(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for number, top1 in enumerate((0.2, 0.5, 0.7)):
        scalars = tracking.round_scalars(_round(number, top1), [_result("site-1", number)])
        tracking.write_tensorboard(tracking.events_dir(store, 7), number, scalars)

    data = tracking.events_zip(store, 7)
    assert data is not None
    unzipped = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(data)).extractall(unzipped)
    glob = EventAccumulator(str(unzipped / "job-7-tensorboard" / "global"))
    glob.Reload()
    top1 = [(e.step, round(e.value, 4)) for e in glob.Scalars("top1/global_model")]
    assert top1 == [(0, 0.2), (1, 0.5), (2, 0.7)]
    assert [e.value for e in glob.Scalars("time/overhead_s")] == [0.5, 1.5, 2.5]
    assert "lr/end_of_round" in glob.Tags()["scalars"]
    site = EventAccumulator(str(unzipped / "job-7-tensorboard" / "sites" / "site-1"))
    site.Reload()
    assert [e.step for e in site.Scalars("time/train_s")] == [0, 1, 2]
    assert "loss/val" not in site.Tags()["scalars"]  # NaN is left out, not written
    assert [e.value for e in site.Scalars("time/phase/download_s")] == [0.25, 0.25, 0.25]


def test_no_events_before_a_round_finished(tmp_path: Path) -> None:
    assert tracking.events_zip(ArtifactStore(tmp_path), 1) is None


def test_mlflow_gets_one_run_per_job_with_a_step_per_round(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    store = ArtifactStore(tmp_path / "data")
    job = Job(id=7, name="digits", sites=["site-1"], num_rounds=2, config={}, files={})
    for number, top1 in enumerate((0.3, 0.6)):
        scalars = tracking.round_scalars(_round(number, top1), [_result("site-1", number)])
        tracking.log_mlflow(uri, store, job, number, scalars)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("resonfl")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["resonfl.job_id"] == "7"
    history = client.get_metric_history(runs[0].info.run_id, "top1/global_model")
    assert [(m.step, m.value) for m in history] == [(0, 0.3), (1, 0.6)]
    assert client.get_metric_history(runs[0].info.run_id, "sites/site-1/top1/local_model")
