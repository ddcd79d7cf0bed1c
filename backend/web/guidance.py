"""The seed's tuning playbook as inline advice, computed from the values being entered.

Each note is (level, title, text); level is "warn" or "info". Values come in as the raw form
text, so advice shows even while another field is still invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from resonfl_server.backend.web import algorithms
from resonfl_server.backend.web.forms import to_text
from resonfl.config import TrainingConfig
from resonfl.fl.fedopt import FedOptArgs

Raw = dict[str, str]


@dataclass(frozen=True)
class Note:
    level: str
    title: str
    text: str
    field: str = ""


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def ema_survival(decay: float, steps: float) -> float:
    """Weight the EMA still puts on the round-start weights after `steps` local steps."""
    return float(decay**steps)


def training_notes(raw: Raw, defaults: TrainingConfig, example: str | None) -> list[Note]:
    notes: list[Note] = []
    decay = _num(raw.get("ema_decay"))
    steps = _num(raw.get("local_steps"))
    if decay is not None and 0 < decay < 1:
        if steps:
            kept = ema_survival(decay, steps)
            level = "warn" if kept > 0.5 else "info"
            text = (
                f"decay^local_steps = {decay:g}^{steps:g} = {kept:.2f}: "
                f"{kept:.0%} of the EMA weight stays on the round-start weights, so only "
                f"{1 - kept:.0%} of this round's progress reaches the server."
            )
            if raw.get("ema_persist") == "true":
                text += (
                    " The EMA restarts from the received global model every round; only its"
                    " decay schedule (a warm-up over the run's steps) is kept across rounds."
                )
            if kept > 0.5:
                text += f" Lower the decay (about {0.05 ** (1 / steps):.3f} keeps 5%)."
        else:
            text = "EMA over short rounds leaves most weight on the round-start weights; set local steps to see how much."
            level = "warn"
        notes.append(Note(level, "The EMA trap", text, "ema_decay"))
    smoothing = _num(raw.get("label_smoothing"))
    if smoothing:
        notes.append(
            Note(
                "warn",
                "Label smoothing inflates val_loss",
                f"With smoothing {smoothing:g} the model is calibrated for soft targets; eval uses "
                "hard cross-entropy, so the reported val_loss goes up even when top-1 does not. "
                "Use it only if your headline metric is computed with smoothing.",
                "label_smoothing",
            )
        )
    changed = [
        name
        for name in ("batch_size", "lr")
        if _num(raw.get(name)) is not None and _num(raw.get(name)) != float(getattr(defaults, name))
    ]
    if changed:
        was = ", ".join(f"{n} {getattr(defaults, n):g} → {raw.get(n)}" for n in changed)
        notes.append(
            Note(
                "warn",
                "Batch / LR scaling: validate it in isolation",
                f"You changed {was}. Bigger batches are not free speed in FL (the reference job "
                "ran slower at batch 256 than at 128); test this change alone before stacking others.",
                changed[0],
            )
        )
    if raw.get("tta_hflip") == "true":
        text = (
            "Averaging each image with its mirror is free top-1 for mirror-symmetric tasks (most "
            "natural images), wrong for class-asymmetric ones (digits, text, arrows)."
        )
        level = "warn" if example in ("digits", "tabular") else "info"
        notes.append(Note(level, "TTA only for mirror-symmetric tasks", text, "tta_hflip"))
    deviations = _deviations(raw, defaults)
    text = (
        "Port the centralized recipe literally first, measure the gap, then change one thing "
        "at a time: stacked changes regressed the reference job by ~2 pp and could only be "
        "untangled by re-running each alone."
    )
    if len(deviations) > 1:
        text = f"You changed {len(deviations)} settings ({', '.join(deviations)}). " + text
    notes.append(
        Note("warn" if len(deviations) > 1 else "info", "Change one thing at a time", text)
    )
    return notes


def _deviations(raw: Raw, defaults: TrainingConfig) -> list[str]:
    out = []
    for name in type(defaults).model_fields:
        if name in raw and raw[name] != to_text(getattr(defaults, name)):
            if _num(raw[name]) is not None and _num(to_text(getattr(defaults, name))) == _num(
                raw[name]
            ):
                continue
            out.append(name)
    return out


_BATCHNORM = re.compile(r"\bBatchNorm[123]d\b|\bSyncBatchNorm\b")


def has_batchnorm(source: str) -> bool:
    return bool(_BATCHNORM.search(source))


def federation_notes(raw: Raw, model_source: str) -> list[Note]:
    notes: list[Note] = []
    algorithm = algorithms.algorithms().get(raw.get("aggregator", ""))
    server_optimizer = algorithm is not None and issubclass(algorithm.args, FedOptArgs)
    if server_optimizer and has_batchnorm(model_source):
        notes.append(
            Note(
                "warn",
                "FedOpt and BatchNorm",
                "This model has BatchNorm layers. A server optimizer treats their running "
                "statistics as buffers and averages them instead of optimizing them; mean/var "
                "can drift from what the optimized weights expect. Prefer FedAvg or FedProx, "
                "or a model with GroupNorm/LayerNorm.",
                "aggregator",
            )
        )
    if algorithm is not None:
        name = algorithm.path.rsplit(".", 1)[1]
        notes.extend(_robustness_notes(name, raw, algorithm.key))
        notes.extend(_privacy_notes(name, raw, algorithm.key, model_source))
    rounds = _num(raw.get("num_rounds"))
    if rounds and rounds > 20:
        notes.append(
            Note(
                "info",
                "More rounds is not free",
                "Every round adds upload, aggregation and redistribution overhead; doubling "
                "rounds doubles it even when local work shrinks.",
                "num_rounds",
            )
        )
    return notes


BUFFERED = ("CoordinateMedian", "TrimmedMean", "Krum", "MultiKrum")


def _robustness_notes(name: str, raw: Raw, key: str) -> list[Note]:
    """The robust rules' costs, in the playbook's voice: what each buys and what it costs."""
    notes: list[Note] = []
    sites = [s for s in (raw.get("sites") or "").split(",") if s]
    if name in BUFFERED:
        count = f"{len(sites)} sites" if sites else "every site"
        notes.append(
            Note(
                "info",
                "Robust rules hold every update in memory",
                f"{name} needs all updates at once: the aggregator holds {count} x the model "
                "size until the round closes (FedAvg holds one accumulator). Robust rules also "
                "discard honest but unusual sites: on non-IID data expect a lower clean top-1 "
                "than FedAvg (docs/results.md measures it). Change one thing at a time: run "
                "the clean job with FedAvg first.",
                "aggregator",
            )
        )
    if name == "Krum":
        notes.append(
            Note(
                "warn",
                "Krum keeps one site's model",
                "Each round one site's update becomes the global model. When sites hold "
                "different classes that model knows only its own: prefer MultiKrum, which "
                "averages the n - f best-scored updates.",
                "aggregator",
            )
        )
    if name == "NormClip":
        notes.append(
            Note(
                "info",
                "Set the clip near the honest norms",
                "Too small and every honest update is shortened (slower training); too large and "
                "nothing is clipped. Run a round first and read the median update norm on the job "
                "page; clipping bounds a bad site's pull but outvotes no one: pair it with the "
                "median when you expect attackers.",
                f"{key}__max_norm",
            )
        )
    return notes


def _privacy_notes(name: str, raw: Raw, key: str, model_source: str) -> list[Note]:
    """What each privacy component guarantees and costs (docs/privacy.md has the details)."""
    notes: list[Note] = []
    sites = [s for s in (raw.get("sites") or "").split(",") if s]
    if name == "DPSGDFedAvg":
        if has_batchnorm(model_source):
            notes.append(
                Note(
                    "warn",
                    "DP-SGD and BatchNorm",
                    "This model has BatchNorm layers: each sample is normalized with its batch's "
                    "statistics, so its gradient cannot be clipped alone. The job is refused at "
                    "submit; replace BatchNorm with GroupNorm (nn.GroupNorm(groups, channels)).",
                    "aggregator",
                )
            )
        eps = _num(raw.get(f"{key}__target_epsilon"))
        level = "warn" if eps is not None and eps < 3 else "info"
        notes.append(
            Note(
                level,
                "DP-SGD costs accuracy, most on small sites",
                "Each site's noise is calibrated so that all its rounds spend exactly the target "
                "epsilon; the fewer samples a site has, the larger its sampling rate and the more "
                "noise it needs. On digits (about 230 samples a site, the DP recipe) epsilon 8 keeps "
                "0.63 top-1 against FedAvg's 0.92, epsilon 3 0.36 and epsilon 1 nothing "
                "(docs/results.md). Keep delta below 1 / samples "
                "per site; the job page plots each site's epsilon and the job stops before the "
                "target.",
                f"{key}__target_epsilon",
            )
        )
    if name == "DPSGDFedAvg":
        notes.append(
            Note(
                "info",
                "DP-SGD wants its own training recipe",
                "Adam and the catalog examples' defaults leave DP-SGD near chance on digits: the "
                "noise dominates each step and Adam rescales it per weight. Start from plain SGD "
                "without momentum, a constant learning rate around 1 (per-sample clipping keeps "
                "it stable), batch 64 and about 5 local steps a round, and set them on the "
                "Training step (docs/privacy.md: what a DP recipe looks like).",
                "aggregator",
            )
        )
    if name == "DPFedAvg":
        count = len(sites) or 1
        per_round = _num(raw.get("sites_per_round"))
        asked = int(per_round) if per_round and raw.get("workflow") != "cyclic" else count
        sampling = (
            f"{asked} of the {count} sites are drawn each round, so the accountant counts a "
            f"sampling rate of {asked / count:.2g} (a smaller epsilon per round)"
            if asked < count
            else "every site is asked every round, so no sampling amplifies the guarantee "
            "(Sites per round draws fewer)"
        )
        notes.append(
            Note(
                "warn" if count < 100 else "info",
                "Site-level DP needs many sites",
                f"The noise on the mean has std noise_multiplier x clip_norm / {asked} per "
                f"weight, and {sampling}. With a handful of sites the noise is larger than the "
                "update: DP-FedAvg was built for thousands of clients. For a few institutions, "
                "prefer DP-SGD on each site.",
                f"{key}__noise_multiplier",
            )
        )
    if name == "SecAggFedAvg":
        count = len(sites)
        survive = "survive one dropout" if count >= 4 else "cannot survive a dropout (4 can)"
        notes.append(
            Note(
                "warn" if 0 < count < 4 else "info",
                "Secure aggregation: the server sees only the sum",
                f"Each site masks its update before it leaves the site; {count or 'the'} sites "
                f"{survive} with the default threshold. It costs twice the upload (8 bytes a "
                "weight), a key exchange at the start of each round and a short unmask after "
                "the last upload; it hides updates from the server, not the released model "
                "(add DP-SGD for that). Each site's metrics stay in the clear.",
                "aggregator",
            )
        )
    return notes
