"""The six-file FL job: render a `Job` to a folder, load it back, validate it.

A job folder holds model_def.py, custom_client_executor.py, custom_persistor.py,
config_fed_client.json, config_fed_server.json and meta.json (NVIDIA FLARE-shaped JSON,
``format_version: 2``), plus optional requirements.txt, a warm-start checkpoint and
``shards/<site>/`` data. Rendering is deterministic: the same Job gives the same bytes.
Loading never executes model_def.py: its class and functions are checked with ``ast``.
"""

from __future__ import annotations

import ast
import importlib.resources
import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from resonfl import __version__
from resonfl.config import (
    DATASET_NAME_RE,
    SITE_NAME_RE,
    FederationConfig,
    ModelConfig,
    TrainingConfig,
)

FORMAT_VERSION = 2
MODEL_DEF = "model_def.py"
EXECUTOR = "custom_client_executor.py"
PERSISTOR = "custom_persistor.py"
CLIENT_CONFIG = "config_fed_client.json"
SERVER_CONFIG = "config_fed_server.json"
META = "meta.json"
JOB_FILES = (MODEL_DEF, EXECUTOR, PERSISTOR, CLIENT_CONFIG, SERVER_CONFIG, META)
REQUIREMENTS = "requirements.txt"
CHECKPOINT_NAMES = ("model_checkpoint.safetensors", "model_checkpoint.pt")
SHARDS_DIR = "shards"

EXECUTOR_CLASS = "custom_client_executor.GenericClientExecutor"
PERSISTOR_CLASS = "custom_persistor.PTFileModelPersistor"
SHAREABLE_GENERATOR_CLASS = "resonfl.fl.shareable.FullModelShareableGenerator"
MAX_JSON_BYTES = 1024 * 1024
# meta.json's schema is closed: these keys (what `Job.meta` writes), nothing else.
META_KEYS = frozenset(
    {
        "format_version", "name", "platform_version", "deploy_map", "sites", "min_clients",
        "resource_spec", "model_checkpoint", "requirements", "shards", "datasets",
    }
)
TRAIN_TASK = "train"


class JobValidationError(ValueError):
    """A job folder or Job that cannot run; names the file and the field at fault."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file, self.field, self.message = file, field, message
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {message}")

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "field": self.field, "message": self.message}


def template_text(name: str) -> str:
    """The platform's own copy of a job script (byte-identical in every rendered job)."""
    return importlib.resources.files("resonfl.templates").joinpath(name).read_text("utf-8")


class Job(BaseModel):
    """Everything one FL job needs; `render` turns it into the six files."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120, description="shown in lists and job pages")
    model: ModelConfig = Field(description="model_def.py and how to build and train its model")
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(), description="the sites' local training"
    )
    federation: FederationConfig = Field(
        default_factory=lambda: FederationConfig(),
        description="rounds, sites, workflow and aggregator",
    )
    model_checkpoint: Path | None = Field(
        None,
        description="warm start: safetensors or a weights-only torch state dict of the model",
    )
    requirements: list[str] = Field(
        default_factory=list, description="pip requirement lines (requirements.txt)"
    )
    shards: dict[str, Path] = Field(
        default_factory=dict,
        description="site -> data folder shipped with the job as shards/<site>/ (simulator)",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if not value.isprintable() or value.strip() != value:
            raise ValueError("name must be printable with no leading/trailing spaces")
        return value

    @field_validator("requirements")
    @classmethod
    def _one_requirement_per_line(cls, value: list[str]) -> list[str]:
        for line in value:
            if "\n" in line or not line.strip():
                raise ValueError(f"requirement {line!r} must be one non-empty line")
        return value

    # ---------------------------------------------------------------- rendering
    def checkpoint_name(self) -> str | None:
        if self.model_checkpoint is None:
            return None
        return (
            CHECKPOINT_NAMES[0]
            if self.model_checkpoint.suffix == ".safetensors"
            else CHECKPOINT_NAMES[1]
        )

    def client_config(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "executors": [
                {
                    "tasks": [TRAIN_TASK],
                    "executor": {
                        "id": "executor",
                        "path": EXECUTOR_CLASS,
                        "args": self.training.model_dump(mode="json"),
                        "task_args": self.client_task_args(),
                    },
                }
            ],
            "components": [_model_component(self.model)],
            "train_fn": self.model.train_fn,
            "eval_fn": self.model.eval_fn,
        }

    def server_config(self) -> dict[str, Any]:
        fed = self.federation
        workflow_args = {
            "num_rounds": fed.num_rounds,
            "min_clients": fed.effective_min_clients,
            "round_timeout_s": fed.round_timeout_s,
            "train_task_name": TRAIN_TASK,
            "persistor_id": "persistor",
            "shareable_generator_id": "shareable_generator",
            "aggregator_id": "aggregator",
            **fed.workflow_args,
        }
        return {
            "format_version": FORMAT_VERSION,
            "components": [
                {
                    "id": "persistor",
                    "path": PERSISTOR_CLASS,
                    "args": {"model": "model", "model_checkpoint": self.checkpoint_name()},
                },
                _model_component(self.model),
                {"id": "shareable_generator", "path": SHAREABLE_GENERATOR_CLASS, "args": {}},
                {
                    "id": "aggregator",
                    "path": fed.aggregator_path,
                    "args": dict(fed.aggregator_args),
                },
            ],
            "workflows": [
                {"id": "workflow", "path": fed.workflow_path, "args": workflow_args},
            ],
        }

    def meta(self) -> dict[str, Any]:
        fed = self.federation
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "platform_version": __version__,
            "deploy_map": {"app": list(fed.sites)},
            "sites": list(fed.sites),
            "min_clients": fed.effective_min_clients,
            "resource_spec": {site: {"num_gpus": fed.gpus_per_site} for site in fed.sites},
            "model_checkpoint": self.checkpoint_name(),
            "requirements": REQUIREMENTS if self.requirements else None,
            "shards": {site: f"{SHARDS_DIR}/{site}" for site in sorted(self.shards)},
            # data at the sites: the dataset each site trains on (its DATA_ROOT on that site)
            "datasets": {site: fed.dataset for site in fed.sites} if fed.dataset else {},
        }

    def rendered_files(self) -> dict[str, str]:
        """The six files as text, exactly as `render` writes them."""
        return {
            MODEL_DEF: self.model.source,
            EXECUTOR: template_text(EXECUTOR),
            PERSISTOR: template_text(PERSISTOR),
            CLIENT_CONFIG: _dump_json(self.client_config()),
            SERVER_CONFIG: _dump_json(self.server_config()),
            META: _dump_json(self.meta()),
        }

    def render(self, directory: str | Path) -> Path:
        """Write the job folder (six files, requirements, checkpoint, shards); return its path."""
        self.validate()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in self.rendered_files().items():
            (out / name).write_text(text, encoding="utf-8", newline="\n")
        if self.requirements:
            (out / REQUIREMENTS).write_text("\n".join(self.requirements) + "\n", encoding="utf-8")
        if self.model_checkpoint is not None:
            shutil.copyfile(self.model_checkpoint, out / str(self.checkpoint_name()))
        for site, source in sorted(self.shards.items()):
            target = out / SHARDS_DIR / site
            if Path(source).resolve() != target.resolve():
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(source, target)
        return out

    # ---------------------------------------------------------------- validation
    def validate(self) -> Job:  # type: ignore[override]  # the SDK name; pydantic's is deprecated
        """Check what pydantic alone cannot; raise JobValidationError naming file and field."""
        check_model_source(self.model)
        fed = self.federation
        for site in self.shards:
            if site not in fed.sites:
                raise JobValidationError(META, "shards", f"shard for unknown site {site!r}")
        for site, source in self.shards.items():
            if not Path(source).is_dir():
                raise JobValidationError(META, f"shards.{site}", f"{source} is not a folder")
        if fed.dataset is not None and self.shards:
            site = sorted(self.shards)[0]
            raise JobValidationError(
                META,
                f"shards.{site}",
                f"the sites train on their own dataset {fed.dataset!r}; ship no shards with it",
            )
        if self.model_checkpoint is not None and not Path(self.model_checkpoint).is_file():
            raise JobValidationError(META, "model_checkpoint", f"{self.model_checkpoint} not found")
        _check_fl_components(self)
        return self

    def workflow_args(self) -> dict[str, Any]:
        fed = self.federation
        return {
            "num_rounds": fed.num_rounds,
            "min_clients": fed.effective_min_clients,
            "round_timeout_s": fed.round_timeout_s,
            **fed.workflow_args,
        }

    def build_workflow(self) -> Any:
        """The job's workflow object (`resonfl.fl.base.Workflow`), built from its class path."""
        from resonfl.fl.base import Workflow, resolve_class  # lazy: torch

        return resolve_class(self.federation.workflow_path, Workflow)(self.workflow_args())

    def build_aggregator(self) -> Any:
        """A fresh aggregator (`resonfl.fl.base.Aggregator`) for this job."""
        from resonfl.fl.base import Aggregator, resolve_class  # lazy: torch

        fed = self.federation
        aggregator = resolve_class(fed.aggregator_path, Aggregator)(fed.aggregator_args)
        aggregator.bind_sampling(self.build_workflow().sample_rate(list(fed.sites)))
        return aggregator

    def client_task_args(self) -> dict[str, Any]:
        """What the aggregator asks of the sites' train loop (FedProx: ``fedprox_mu``),
        derived from its validated Args; rendered into config_fed_client.json."""
        from resonfl.fl.base import Aggregator, resolve_class  # lazy: pulls in torch

        fed = self.federation
        cls = resolve_class(fed.aggregator_path, Aggregator)
        return cls.client_task_args(cls.Args.model_validate(fed.aggregator_args))

    @classmethod
    def load(cls, directory: str | Path, site: str | None = None) -> Job:
        """Read a job folder back into a Job (the inverse of `render`), validating it.

        ``site``: load one site's view of the job (a site's bundle holds only its own shard).
        """
        return validate_job_dir(directory, site=site)


def _model_component(model: ModelConfig) -> dict[str, Any]:
    return {"id": "model", "path": f"model_def.{model.class_name}", "args": dict(model.args)}


def _dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def check_model_source(model: ModelConfig) -> None:
    """Parse model_def.py (never run it) and check the class and functions exist."""
    try:
        # A UTF-8 byte-order mark is fine for Python files; ast.parse wants it gone.
        tree = ast.parse(model.source.removeprefix("\ufeff"), filename=MODEL_DEF)
    except SyntaxError as exc:
        raise JobValidationError(
            MODEL_DEF, f"line {exc.lineno}", f"syntax error: {exc.msg}"
        ) from None
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    functions = {
        n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assigned = {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for n in tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        for alias in n.names
    }
    if model.class_name not in classes | assigned | imported:
        raise JobValidationError(
            MODEL_DEF, "class_name", f"model_def.py defines no class {model.class_name!r}"
        )
    train = functions.get(model.train_fn)
    if train is None:
        raise JobValidationError(
            MODEL_DEF, "train_fn", f"model_def.py defines no function {model.train_fn!r}"
        )
    n_args = len(train.args.posonlyargs) + len(train.args.args)
    if n_args < 4 and train.args.vararg is None:
        raise JobValidationError(
            MODEL_DEF,
            "train_fn",
            f"{model.train_fn}(model, env, out_dir, logger) must take 4 arguments, takes {n_args}",
        )


def _check_fl_components(job: Job) -> None:
    """Resolve workflow and aggregator class paths now, not when round 7 fails."""
    from resonfl.fl.base import Aggregator, ComponentError, Workflow, resolve_class  # lazy: torch

    fed = job.federation
    for field, path, base, args in (
        ("workflow_path", fed.workflow_path, Workflow, job.workflow_args()),
        ("aggregator_path", fed.aggregator_path, Aggregator, fed.aggregator_args),
    ):
        try:
            cls = resolve_class(path, base)
        except ComponentError as exc:
            raise JobValidationError(SERVER_CONFIG, field, str(exc)) from None
        where = "workflows[0].args" if base is Workflow else "components[aggregator].args"
        try:
            built = cls(args)
        except ValidationError as exc:
            raise JobValidationError(SERVER_CONFIG, where, _pydantic_message(exc)) from None
        check_sites = getattr(built.args, "check_sites", None)  # e.g. hierarchical groups
        if check_sites is not None:
            try:
                check_sites(list(fed.sites))
            except ValueError as exc:
                raise JobValidationError(SERVER_CONFIG, where, str(exc)) from None
        _check_against_algorithm(job, built.args)
        if base is Workflow:
            asked = round(built.sample_rate(list(fed.sites)) * len(fed.sites))
        elif getattr(cls, "secure_aggregation", False) and asked < 3:
            raise JobValidationError(
                SERVER_CONFIG,
                "workflows[0].args",
                f"secure aggregation needs at least 3 sites in each round; sites_per_round "
                f"asks {asked}: with 2, each could read the other's update from the new model",
            )


def _check_against_algorithm(job: Job, args: Any) -> None:
    """An algorithm's own checks of the model and the training settings (DP-SGD: no BatchNorm,
    no AMP), so a job that cannot run is refused at submit, not in round 0."""
    check_model = getattr(args, "check_model_source", None)
    if check_model is not None:
        try:
            check_model(job.model.source)
        except ValueError as exc:
            raise JobValidationError(MODEL_DEF, "model", str(exc)) from None
    check_training = getattr(args, "check_training", None)
    if check_training is not None:
        try:
            check_training(job.training.model_dump())
        except ValueError as exc:
            raise JobValidationError(CLIENT_CONFIG, "executors[0].executor.args", str(exc)) from None


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


# -------------------------------------------------------------------- loading
def _check_text(path: Path) -> None:
    """Job files are UTF-8 text (they are stored and shown as text); absent ones pass."""
    if not path.is_file():
        return
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobValidationError(
            path.name, "", f"not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise JobValidationError(name, "", "file is missing")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:  # read back and echoed on every job read: keep them small
        raise JobValidationError(
            name, "", f"{size} bytes; a job's JSON file may hold at most {MAX_JSON_BYTES}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobValidationError(name, "", f"not valid JSON: {exc}") from None
    except ValueError as exc:  # NaN / Infinity: not JSON (RFC 8259), and no database stores it
        raise JobValidationError(name, "", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise JobValidationError(name, "", "not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise JobValidationError(name, "", "must be a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise JobValidationError(
            name, "format_version", f"must be {FORMAT_VERSION}, got {data.get('format_version')!r}"
        )
    return data


def _check_fixed_paths(server: dict[str, Any]) -> None:
    """Components the platform itself provides: their `path` must name the platform's class
    (a job cannot swap in another persistor, or `os.system`)."""
    fixed = {"persistor": PERSISTOR_CLASS, "shareable_generator": SHAREABLE_GENERATOR_CLASS}
    for index, comp in enumerate(server.get("components") or []):
        if isinstance(comp, dict) and comp.get("id") in fixed:
            if comp.get("path") != fixed[comp["id"]]:
                raise JobValidationError(
                    SERVER_CONFIG,
                    f"components[{index}].path",
                    f"the {comp['id']} is the platform's: must be {fixed[comp['id']]}, "
                    f"got {comp.get('path')!r}",
                )


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def _get(data: Any, file: str, field: str, kind: type | tuple[type, ...]) -> Any:
    """Follow a dotted path with list indexes (``executors.0.executor``)."""
    cur = data
    for part in field.split("."):
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise JobValidationError(file, field, "is missing") from None
    if not isinstance(cur, kind):
        raise JobValidationError(file, field, f"must be {_kind_name(kind)}")
    return cur


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _component(config: dict[str, Any], file: str, cid: str) -> dict[str, Any]:
    comps = _get(config, file, "components", list)
    for comp in comps:
        if isinstance(comp, dict) and comp.get("id") == cid:
            _get(comp, file, "path", str)
            if not isinstance(comp.get("args", {}), dict):
                raise JobValidationError(file, f"components[{cid}].args", "must be an object")
            return comp
    raise JobValidationError(file, f"components[{cid}]", "is missing")


def _model_from(comp: dict[str, Any], file: str) -> tuple[str, dict[str, Any]]:
    module, _, name = comp["path"].rpartition(".")
    if module != "model_def" or not name:
        raise JobValidationError(
            file, "components[model].path", f"must be model_def.<Class>, got {comp['path']!r}"
        )
    return name, dict(comp.get("args", {}))


def _check_same_model(
    client: dict[str, Any], server: dict[str, Any], persistor: dict[str, Any]
) -> None:
    """The server builds the initial model from its config, the sites train the client's:
    a difference (a hand-edited file) would fail round 0 with a size mismatch, so refuse it."""
    model_id = persistor.get("args", {}).get("model", "model")
    if not isinstance(model_id, str):
        raise JobValidationError(
            SERVER_CONFIG, "components[persistor].args.model", "must be a string"
        )
    server_model = _component(server, SERVER_CONFIG, model_id)
    client_model = _component(client, CLIENT_CONFIG, "model")
    _model_from(server_model, SERVER_CONFIG)
    mine = (client_model["path"], client_model.get("args", {}))
    theirs = (server_model["path"], server_model.get("args", {}))
    if mine != theirs:
        raise JobValidationError(
            f"{CLIENT_CONFIG} vs {SERVER_CONFIG}",
            "components[model]",
            f"the sites train {_describe(*mine)} ({CLIENT_CONFIG}) but the server builds "
            f"{_describe(*theirs)} ({SERVER_CONFIG}); both files must name the same model "
            "class and args (re-render the job instead of editing one of them)",
        )


def _describe(path: str, args: dict[str, Any]) -> str:
    return f"{path}({json.dumps(args, sort_keys=True)})"


def _pydantic(file: str, prefix: str, build: Any) -> Any:
    try:
        return build()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{loc}" if loc else prefix
        raise JobValidationError(file, field, err["msg"]) from None


def validate_job_dir(directory: str | Path, site: str | None = None) -> Job:
    """Load and validate a job folder; raise JobValidationError naming the file and field.

    With ``site``, only that site's shard is expected (and kept): a site's view of the job.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise JobValidationError(str(folder), "", "job folder not found")
    for name in JOB_FILES:
        if not (folder / name).is_file():
            raise JobValidationError(name, "", "file is missing")
    for name in (*JOB_FILES, REQUIREMENTS):
        _check_text(folder / name)
    client = _read_json(folder, CLIENT_CONFIG)
    server = _read_json(folder, SERVER_CONFIG)
    meta = _read_json(folder, META)

    executor = _get(client, CLIENT_CONFIG, "executors.0.executor", dict)
    if _get(executor, CLIENT_CONFIG, "path", str) != EXECUTOR_CLASS:
        raise JobValidationError(
            CLIENT_CONFIG, "executors[0].executor.path", f"must be {EXECUTOR_CLASS}"
        )
    args = _get(executor, CLIENT_CONFIG, "args", dict)
    task_args = executor.get("task_args")  # absent in folders rendered before it existed
    training = _pydantic(
        CLIENT_CONFIG, "executors[0].executor.args", lambda: TrainingConfig.model_validate(args)
    )
    class_name, model_args = _model_from(_component(client, CLIENT_CONFIG, "model"), CLIENT_CONFIG)
    try:
        # newline="": keep the file's own line endings, so a re-render gives the same bytes.
        with open(folder / MODEL_DEF, encoding="utf-8", newline="") as fh:
            source = fh.read()
    except UnicodeDecodeError as exc:
        raise JobValidationError(MODEL_DEF, "", f"not UTF-8 text: {exc.reason}") from None
    model = _pydantic(
        CLIENT_CONFIG,
        "components[model]",
        lambda: ModelConfig(
            source=source,
            class_name=class_name,
            args=model_args,
            train_fn=client.get("train_fn", "fl_train_model"),
            eval_fn=client.get("eval_fn", "fl_evaluate_model"),
        ),
    )

    workflow = _get(server, SERVER_CONFIG, "workflows.0", dict)
    wf_path = _get(workflow, SERVER_CONFIG, "path", str)
    wf_args = dict(_get(workflow, SERVER_CONFIG, "args", dict))
    aggregator = _component(server, SERVER_CONFIG, "aggregator")
    persistor = _component(server, SERVER_CONFIG, "persistor")
    _check_fixed_paths(server)
    _check_same_model(client, server, persistor)
    unknown = sorted(set(meta) - META_KEYS)
    if unknown:
        raise JobValidationError(
            META, unknown[0], f"unknown key; meta.json holds only {', '.join(sorted(META_KEYS))}"
        )
    sites = _get(meta, META, "sites", list)
    num_rounds = wf_args.pop("num_rounds", None)
    min_clients = wf_args.pop("min_clients", None)
    timeout = wf_args.pop("round_timeout_s", 3600.0)
    for key in ("train_task_name", "persistor_id", "shareable_generator_id", "aggregator_id"):
        wf_args.pop(key, None)
    spec = meta.get("resource_spec") or {}
    if not isinstance(spec, dict):
        raise JobValidationError(META, "resource_spec", "must be an object")
    dataset = _dataset_of(meta, sites)
    gpus = 0
    for owner, value in spec.items():
        if isinstance(value, dict):
            num = value.get("num_gpus", 0)
            if not isinstance(num, int) or isinstance(num, bool):
                raise JobValidationError(
                    META, f"resource_spec.{owner}.num_gpus", "must be an integer"
                )
            gpus = max(gpus, num)
    federation = _pydantic(
        SERVER_CONFIG,
        "workflows[0].args",
        lambda: FederationConfig(
            num_rounds=num_rounds,
            min_clients=min_clients,
            sites=sites,
            workflow_path=wf_path,
            workflow_args=wf_args,
            aggregator_path=aggregator["path"],
            aggregator_args=dict(aggregator.get("args", {})),
            round_timeout_s=timeout,
            gpus_per_site=gpus,
            dataset=dataset,
        ),
    )
    name = _get(meta, META, "name", str)

    checkpoint = None
    ckpt_name = meta.get("model_checkpoint")
    if ckpt_name is not None:
        if ckpt_name not in CHECKPOINT_NAMES:
            raise JobValidationError(META, "model_checkpoint", f"must be one of {CHECKPOINT_NAMES}")
        checkpoint = folder / ckpt_name
    requirements: list[str] = []
    if (folder / REQUIREMENTS).is_file():
        requirements = [
            line.strip()
            for line in (folder / REQUIREMENTS).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    shards: dict[str, Path] = {}
    shard_map = meta.get("shards") or {}
    if not isinstance(shard_map, dict):
        raise JobValidationError(META, "shards", "must be an object {site: shards/<site>}")
    for owner, rel in shard_map.items():
        if not isinstance(owner, str) or not SITE_NAME_RE.fullmatch(owner):
            raise JobValidationError(META, "shards", f"bad site name {owner!r}")
        if rel != f"{SHARDS_DIR}/{owner}":
            raise JobValidationError(META, f"shards.{owner}", f"must be {SHARDS_DIR}/{owner}")
        shards[owner] = folder / rel
    if site is not None:
        if site not in sites:
            raise JobValidationError(META, "sites", f"site {site!r} is not part of this job")
        shards = {s: p for s, p in shards.items() if s == site}

    job = _pydantic(
        META,
        "",
        lambda: Job(
            name=name,
            model=model,
            training=training,
            federation=federation,
            model_checkpoint=checkpoint,
            requirements=requirements,
            shards=shards,
        ),
    )
    job.validate()
    if task_args is not None and task_args != job.client_task_args():
        raise JobValidationError(
            CLIENT_CONFIG,
            "executors[0].executor.task_args",
            f"must be {job.client_task_args()} (what the aggregator's args ask of the sites)",
        )
    return job


def _dataset_of(meta: dict[str, Any], sites: Any) -> str | None:
    """meta.json `datasets` {site: name}: empty, or the same registered name for every site."""
    datasets = meta.get("datasets")
    datasets = {} if datasets is None else datasets
    if not isinstance(datasets, dict):
        raise JobValidationError(META, "datasets", "must be an object {site: dataset name}")
    if not datasets:
        return None
    for owner, name in datasets.items():
        if not isinstance(name, str) or not DATASET_NAME_RE.fullmatch(name):
            raise JobValidationError(
                META, f"datasets.{owner}", "a dataset name: 1-63 letters, digits, '.', '_', '-'"
            )
    if not isinstance(sites, list) or sorted(datasets) != sorted(map(str, sites)):
        raise JobValidationError(META, "datasets", "must name a dataset for every site in sites")
    names = sorted(set(datasets.values()))
    if len(names) > 1:
        raise JobValidationError(
            META, "datasets", f"every site trains on the same dataset, not {', '.join(names)}"
        )
    return str(names[0])
