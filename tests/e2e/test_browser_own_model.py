"""Your own model, in the browser alone: upload a hand-written model_def.py and a warm-start
checkpoint in the Model step (after seeing the errors for one that lacks the class or the
train function), upload a shard zip per site in the Data step, check the Review shows the
uploaded file byte for byte, submit, and see the job finish from the warm start."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from e2e_support import sign_in

pytestmark = pytest.mark.e2e

FINISH_TIMEOUT_MS = 300_000

MODEL_DEF = '''"""A hand-written model for the browser test: two features, two classes."""

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset


class TinyNet(nn.Module):
    def __init__(self, in_features: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def load_dataset(root, split):
    with np.load(Path(root) / f"{split}.npz") as data:
        x = torch.from_numpy(np.asarray(data["X"], dtype=np.float32))
        y = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))
    return TensorDataset(x, y)


def fl_train_model(model, env, out_dir, logger):
    logger.info("TinyNet: training on %s", env.data_root)
    return env.fit(model, load_dataset(env.data_root, "train"), load_dataset(env.data_root, "val"))
'''


def _tiny_net() -> torch.nn.Module:
    """The class of MODEL_DEF, built from its source (as the platform does)."""
    namespace: dict[str, Any] = {"__name__": "model_def_under_test"}
    exec(compile(MODEL_DEF, "model_def.py", "exec"), namespace)  # noqa: S102 - our own source
    return namespace["TinyNet"]()  # type: ignore[no-any-return]


def _warm_start(path: Path) -> dict[str, torch.Tensor]:
    """Known weights: every tensor a fixed ramp, saved as safetensors."""
    from safetensors.torch import save_file

    model = _tiny_net()
    with torch.no_grad():
        for i, (_, tensor) in enumerate(sorted(model.state_dict().items())):
            ramp = torch.linspace(-0.5, 0.5, tensor.numel()) + 0.01 * i
            tensor.copy_(ramp.reshape(tensor.shape))
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(path))
    return weights


def _shard_zip(path: Path, seed: int) -> Path:
    """train.npz / val.npz: 4 float features, label = whether their sum is positive."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", 64), ("val", 32)):
            x = rng.normal(size=(n, 4)).astype(np.float32)
            y = (x.sum(axis=1) > 0).astype(np.int64)
            buf = io.BytesIO()
            np.savez(buf, X=x, y=y)
            zf.writestr(f"{split}.npz", buf.getvalue())
    return path


def _next(page: Any) -> None:
    page.get_by_role("button", name="Next →").click()
    page.wait_for_load_state("domcontentloaded")


def test_upload_your_own_model_and_warm_start(
    platform: Any, page: Any, screenshots: Path, tmp_path: Path
) -> None:
    sign_in(page, platform.url)
    page.goto(f"{platform.url}/jobs/new")
    page.wait_for_url("**/model")
    page.get_by_label("Job name").fill("tinynet-own-model")
    page.get_by_label("My own model_def.py").check()

    # -- a model_def.py without the class, then without the train function: errors beside them
    no_class = tmp_path / "no_class" / "model_def.py"
    no_class.parent.mkdir()
    no_class.write_text(MODEL_DEF.replace("class TinyNet", "class OtherNet"), "utf-8")
    page.get_by_label("Model class").fill("TinyNet")
    page.get_by_label("Upload model_def.py").set_input_files(no_class)
    _next(page)
    assert "no class 'TinyNet'" in _error_beside(page, "class_name")
    no_train = tmp_path / "no_train" / "model_def.py"
    no_train.parent.mkdir()
    no_train.write_text(MODEL_DEF.replace("def fl_train_model", "def train_it"), "utf-8")
    page.get_by_label("Upload model_def.py").set_input_files(no_train)
    _next(page)
    assert "no function 'fl_train_model'" in _error_beside(page, "train_fn")
    assert page.get_by_label("My own model_def.py").is_checked()
    page.screenshot(path=screenshots / "13-wizard-model-upload-error.png", full_page=True)

    # -- the good model_def.py and a warm start made from its class with known weights
    model_def = tmp_path / "model_def.py"
    model_def.write_bytes(MODEL_DEF.encode())
    warm = _warm_start(tmp_path / "warm.safetensors")
    page.get_by_label("Upload model_def.py").set_input_files(model_def)
    page.get_by_label("Checkpoint (.pt or .safetensors)").set_input_files(
        tmp_path / "warm.safetensors"
    )
    page.screenshot(path=screenshots / "14-wizard-model-upload.png", full_page=True)
    _next(page)

    # -- Training: a few steps
    page.wait_for_url("**/training")
    page.get_by_label("Local steps per round").fill("3")
    page.get_by_label("Batch size", exact=True).fill("16")
    _next(page)

    # -- Federation: both sites, one round
    page.wait_for_url("**/federation")
    page.get_by_label("Rounds").fill("1")
    page.get_by_label("site-1").check()
    page.get_by_label("site-2").check()
    _next(page)

    # -- Data: no example to generate from, so "Data at the sites" is the default (issue 12);
    # this job brings its own shards, so it switches to upload
    page.wait_for_url("**/data")
    assert page.locator("#mode-sites").is_checked()
    assert page.locator("#mode-generate").is_disabled()
    page.get_by_label("Upload a zip per site").check()
    for i, site in enumerate(("site-1", "site-2")):
        page.get_by_label(f"Shard zip for {site}").set_input_files(
            _shard_zip(tmp_path / f"{site}.zip", seed=i)
        )
    page.screenshot(path=screenshots / "15-wizard-data-upload.png", full_page=True)
    _next(page)

    # -- Review: the uploaded model_def.py, byte for byte (page text and job-folder zip)
    page.wait_for_url("**/review")
    shown = page.locator("pre.code[data-file='model_def.py']").text_content()
    assert shown == MODEL_DEF
    assert "warm start from a checkpoint" in page.locator("main").inner_text()
    href = page.get_by_role("link", name="Download job folder (zip)").get_attribute("href")
    folder = page.request.get(f"{platform.url}{href}")
    assert folder.ok
    with zipfile.ZipFile(io.BytesIO(folder.body())) as zf:
        assert zf.read("tinynet-own-model/model_def.py") == MODEL_DEF.encode()
    page.screenshot(path=screenshots / "16-wizard-review-own-model.png", full_page=True)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/jobs/*")

    # -- the job finishes; round 0's global model left the warm start but kept its keys
    page.evaluate("window.__noReload = true")
    page.locator("#job-live[data-status='finished']").wait_for(timeout=FINISH_TIMEOUT_MS)
    assert page.evaluate("window.__noReload === true"), "the page reloaded"
    page.screenshot(path=screenshots / "17-job-own-model-finished.png", full_page=True)
    round0 = page.request.get(f"{page.url}/rounds/0/download")
    assert round0.ok
    (tmp_path / "round0.pt").write_bytes(round0.body())
    state = torch.load(tmp_path / "round0.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(warm)
    assert any(not torch.equal(state[k], warm[k]) for k in warm), "round 0 did not train"
    for key, tensor in warm.items():
        assert state[key].shape == tensor.shape


def _error_beside(page: Any, field: str) -> str:
    error = page.locator(f"#{field}-error")
    error.wait_for(state="visible")
    described = page.locator(f"#{field}").get_attribute("aria-describedby") or ""
    assert f"{field}-error" in described, f"#{field} does not point at its error"
    return str(error.inner_text())
