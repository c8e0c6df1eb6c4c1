"""The pipeline configuration: one typed model, validated once, before any work.

A config comes from a YAML file (``configs/*.yaml``) with CLI flags or flow parameters laid over
it. Every problem is reported as ``ConfigError`` naming the file, the field and what is wrong.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

# FiftyOne dataset names become MongoDB collection suffixes and CLI arguments: keep them plain.
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names file, field and problem."""


class _Strict(BaseModel):
    # Unknown keys are almost always typos ("batchsize"): refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where images come from: a folder or file (``path``) or a glob pattern (``glob``)."""

    path: str | None = None
    glob: str | None = None
    recursive: bool = True
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS

    @model_validator(mode="before")
    @classmethod
    def _plain_string_is_a_path(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            text = str(value)
            return {"glob": text} if any(c in text for c in "*?[") else {"path": text}
        return value

    @model_validator(mode="after")
    def _exactly_one_location(self) -> SourceConfig:
        if (self.path is None) == (self.glob is None):
            raise ValueError("give exactly one of 'path' or 'glob'")
        return self

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one extension, e.g. ['.jpg']")
        return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in value)


class DetectorConfig(_Strict):
    """The pre-annotating model and how it runs.

    Every field is also a ``bootstrap annotate`` flag and a field of the flows' ``detector``
    parameter (``DetectorOptions``): the descriptions below are their help texts.
    """

    model: str = Field(
        "yolov8n.pt",
        description="Weights path or name, e.g. yolov8n.pt (a name is looked up in $BOOTSTRAP_MODELS).",
    )
    device: Literal["auto", "cpu", "cuda"] | str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    # Exported runtimes (bootstrap.exported) give the same boxes several times faster on a CPU.
    runtime: Literal["auto", "torch", "openvino", "onnx"] = Field(
        "auto", description="auto (ONNX Runtime on a CPU, PyTorch on CUDA), torch, openvino or onnx "
        "(the latter two export the weights once, cached).",
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Images per model call.")
    cpu_streams: int = Field(
        0, ge=0, le=64, description="Images an exported runtime runs at once on a CPU, on one "
        "thread each; 1: one image at a time on every core; 0 (auto): one per core, at most "
        "batch_size.",
    )
    image_size: int = Field(
        640, ge=32, le=4096, description="Inference size in pixels (a multiple of 32)."
    )
    # Low on purpose: triage and calibration need to see the low-score boxes too.
    min_confidence: float = Field(
        0.05, ge=0.0, le=0.1, description="The lowest score stored (at most 0.1)."
    )
    nms_iou: float = Field(0.7, gt=0.0, le=1.0, description="IoU of the model's NMS.")
    # Better proposals (bootstrap.proposals): more views of each image, their boxes fused.
    # Each view is one more inference pass per image.
    tta: tuple[Literal["hflip", "upscale", "large", "tiles"], ...] = Field(
        (), description="Views of each model whose boxes are fused in: hflip, upscale (1.25x), "
        "large (2x), tiles (2x2 windows; four passes). One pass each otherwise.",
    )
    second_model: str | None = Field(
        None, description="A second detector whose boxes (and views) are fused in, e.g. yolo26n.pt; "
        "left out with a warning when its weights cannot be loaded.",
    )
    fusion_iou: float = Field(
        0.55, gt=0.0, le=1.0, description="IoU at which boxes of different views are one object."
    )

    @property
    def upscaled_size(self) -> int:
        """The ``upscale`` view's inference size: 1.25x, on the model's 32-pixel stride."""
        return round(self.image_size * 1.25 / 32) * 32

    @property
    def large_size(self) -> int:
        """The ``large`` view's inference size: twice the model's."""
        return self.image_size * 2

    def single_view(self, **changes: Any) -> DetectorConfig:
        """This config as one plain model run (no extra views), with ``changes`` applied."""
        return self.model_copy(update={"tta": (), "second_model": None} | changes)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N")

    @field_validator("tta")
    @classmethod
    def _each_view_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a view twice")
        return value

    @field_validator("image_size")
    @classmethod
    def _multiple_of_stride(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"{value} is not a multiple of 32 (the model's stride)")
        return value


class OntologyConfig(_Strict):
    """Maps model classes to dataset classes: rename, merge several into one, drop the rest.

    ``mapping`` is ``{model class: dataset class}``; model classes not in it are dropped.
    ``classes`` fixes the dataset's class order (export indices); by default it is the order in
    which dataset classes first appear in ``mapping``.
    """

    mapping: dict[str, str]
    classes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _classes_cover_mapping(self) -> OntologyConfig:
        if not self.mapping:
            raise ValueError("mapping is empty: every detection would be dropped")
        if self.classes:
            missing = sorted(set(self.mapping.values()) - set(self.classes))
            if missing:
                raise ValueError(f"classes does not list {missing}, which mapping produces")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("classes lists a class twice")
        return self

    @property
    def dataset_classes(self) -> tuple[str, ...]:
        return self.classes or tuple(dict.fromkeys(self.mapping.values()))


class ClassThresholds(_Strict):
    accept: float | None = Field(None, ge=0.0, le=1.0)
    reject: float | None = Field(None, ge=0.0, le=1.0)


class ScoreModel(_Strict):
    """Weights of the logistic model that turns a stored box into the probability that it is
    right (``bootstrap.triage.box_scores``): features are the logit of its confidence, the log
    of its relative area, their product, the views' support, the logit of each view's own
    confidence (``views``: weight per per-box score field such as ``score_base_large``) and how
    much the box overlaps a higher-scored box of any class (``overlap``) and of its own class
    (``overlap_same``; duplicates are rarely right). Fitted on labelled images
    (``bootstrap.learning.fit_score_model``); thresholds then apply to that probability."""

    bias: float = 0.0
    logit: float = 1.0
    log_area: float = 0.0
    logit_x_log_area: float = 0.0
    model_support: float = 0.0
    tta_support: float = 0.0
    overlap: float = 0.0
    overlap_same: float = 0.0
    views: dict[str, float] = {}

    @field_validator("views")
    @classmethod
    def _known_view_scores(cls, value: dict[str, float]) -> dict[str, float]:
        from bootstrap.schema import VIEW_SCORE_KEYS

        unknown = sorted(set(value) - set(VIEW_SCORE_KEYS))
        if unknown:
            raise ValueError(f"unknown view scores {unknown}; known: {', '.join(VIEW_SCORE_KEYS)}")
        return value


class TriageConfig(_Strict):
    """Per-box routing thresholds: accept >= ``accept``, reject < ``reject``, review between."""

    accept: float = Field(0.7, ge=0.0, le=1.0)
    reject: float = Field(0.25, ge=0.0, le=1.0)
    per_class: dict[str, ClassThresholds] = {}
    # Doubt signals (bootstrap.triage); null switches one off.
    class_confusion_iou: float | None = Field(0.7, gt=0.0, le=1.0)
    likely_misses_at: float | None = Field(1.0, gt=0.0)
    # Boxes (fractionally) not found by every view, when proposals are fused from several.
    disagreement_at: float | None = Field(1.0, gt=0.0)
    # An image goes to review only when its priority (expected corrections) reaches this;
    # below it, its accepted boxes are exported unreviewed and its review boxes dropped (null: off).
    review_at: float | None = Field(None, ge=0.0)
    # Routes and priorities use this model's probability instead of the raw confidence (null: raw).
    score_model: ScoreModel | None = None

    @model_validator(mode="after")
    def _reject_below_accept(self) -> TriageConfig:
        for name, accept, reject in [("default", self.accept, self.reject)] + [
            (c, t.accept if t.accept is not None else self.accept,
             t.reject if t.reject is not None else self.reject)
            for c, t in self.per_class.items()
        ]:
            if reject > accept:
                raise ValueError(f"{name}: reject ({reject}) is above accept ({accept})")
        return self

    def check_classes(self, classes: Sequence[str]) -> None:
        """Check that ``per_class`` names only classes of ``classes`` (the dataset's): a
        misspelt class would silently never apply.

        Raises:
            ConfigError: an unknown class, named with the valid ones.
        """
        import difflib

        unknown = sorted(set(self.per_class) - set(classes))
        if classes and unknown:
            guesses = [m for c in unknown for m in difflib.get_close_matches(c, classes, n=1)]
            shown = ", ".join(classes[:12]) + (f", … ({len(classes)} in all)" if len(classes) > 12 else "")
            raise ConfigError(
                f"triage.per_class: unknown class {', '.join(repr(c) for c in unknown)}"
                + (f" (did you mean {', '.join(repr(g) for g in guesses)}?)" if guesses else "")
                + f"; the dataset's classes are {shown}"
            )


class ReviewConfig(_Strict):
    """What the review loop learns and when it may stop (bootstrap.review_learning)."""

    # Recalibrate per-class thresholds from the reviewed images after each applied batch.
    learn: bool = True
    # How many boxes of evidence the config's thresholds are worth when shrinking towards them.
    prior_boxes: float = Field(150.0, gt=0.0)
    # Share of the images triage does not send to review that are audited at random (at least
    # 2 images): the unbiased evidence of the stopping rule. 0 switches the audit off.
    audit: float = Field(0.05, ge=0.0, le=1.0)
    # Whether reviewers check the boxes triage accepted on the images they open (true), or only
    # the boxes routed to review (false): accepted boxes then ship unchecked, as on an
    # auto_accepted image, unless tagged `reject` (audited images are always checked whole).
    # A config without the key checks every box: what reviewers are asked to do does not change
    # under a config written before the key existed (configs/default.yaml sets false).
    check_accepted: bool = True
    # Targets of the exported labels the stopping rule checks.
    target_precision: float = Field(0.97, gt=0.0, le=1.0)
    target_recall: float = Field(0.95, gt=0.0, le=1.0)


class TrainConfig(_Strict):
    """Fine-tuning the detector on the dataset's final labels (``bootstrap.training``).

    Every field is also a ``bootstrap train`` flag and a field of the ``train``/``improve``
    flows' ``training`` parameter (``TrainOptions``, derived).
    """

    models_dir: str = Field(
        "models", description="Folder of the model versions, one subfolder per dataset "
        "(relative paths: to the working directory, like exports/).",
    )
    epochs: int = Field(20, ge=1, le=1000, description="Epochs at most.")
    image_size: int = Field(640, ge=32, le=4096, description="Training size in pixels (a multiple of 32).")
    time_budget_minutes: float | None = Field(
        None, gt=0.0, description="Stop after the epoch that would run past this many minutes.",
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Images per training step.")
    device: Literal["auto", "cpu", "cuda"] | str = Field(
        "auto", description="auto (a GPU when there is one), cpu, cuda or cuda:N.",
    )
    split: str = Field("train=0.8,val=0.2", description="Split of the training export, by content hash.")
    min_improvement: float = Field(
        0.0, ge=0.0, le=1.0, description="mAP50-95 a new version must gain over the current "
        "detector on the validation split to replace it.",
    )

    _known_device = field_validator("device")(DetectorConfig._known_device.__func__)
    _multiple_of_stride = field_validator("image_size")(DetectorConfig._multiple_of_stride.__func__)


class PipelineConfig(_Strict):
    """Everything one dataset's pipeline needs."""

    dataset: str
    sources: tuple[SourceConfig, ...] = ()
    detector: DetectorConfig = DetectorConfig()
    ontology: OntologyConfig | None = None
    triage: TriageConfig = TriageConfig()
    review: ReviewConfig = ReviewConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("dataset")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _DATASET_NAME.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a usable dataset name; use letters, digits, '_', '-' or '.'"
            )
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _single_source_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | dict) else value


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Read a YAML config, lay ``overrides`` over it (nested dicts merge) and validate.

    Args:
        path: a YAML file; ``None`` uses ``configs/default.yaml``.
        overrides: values from CLI flags or flow parameters; ``None`` values are ignored.

    Raises:
        ConfigError: the file is missing or not YAML, or a field is invalid.
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    return validate_config(_merge(raw, overrides or {}), origin=str(source))


def validate_config(raw: dict[str, Any], origin: str = "<config>") -> PipelineConfig:
    """Validate a config mapping; errors name ``origin``, the field and the problem."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        problems = [
            f"{origin}: {'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        raise ConfigError("\n".join(problems)) from None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _overrides_of(model: type[BaseModel], name: str) -> type[BaseModel]:
    """A model with every field of ``model`` optional (None: keep the config file's value),
    with the same types, constraints and descriptions: what CLI flags and flow parameters carry."""
    fields = {
        field: (
            (Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation) | None,
            Field(None, description=info.description),
        )
        for field, info in model.model_fields.items()
    }
    doc = f"Overrides of ``{model.__name__}``: each field None keeps the config file's value."
    return create_model(name, __base__=_Overrides, __doc__=doc, **fields)


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The detector fields as optional overrides: the ``detector`` parameter of the flows, and the
#: ``bootstrap annotate`` flags (``cli.options``), derived from ``DetectorConfig`` alone.
DetectorOptions = _overrides_of(DetectorConfig, "DetectorOptions")
#: The training fields as optional overrides: the ``training`` parameter of the ``train`` and
#: ``improve`` flows and the ``bootstrap train`` flags.
TrainOptions = _overrides_of(TrainConfig, "TrainOptions")


def load_pipeline_config(
    config_path: str | Path | None = None,
    *,
    dataset: str | None = None,
    sources: list[str] | None = None,
    detector: BaseModel | dict[str, Any] | None = None,
    train: BaseModel | dict[str, Any] | None = None,
) -> PipelineConfig:
    """Load ``config_path`` (default config when None) with what a command or a flow run gives
    on top: a dataset name, sources, detector overrides (``DetectorOptions``) and training
    overrides (``TrainOptions``).

    Raises:
        ConfigError: the file or a resulting field is invalid.
    """
    if isinstance(detector, BaseModel):
        detector = {field: value for field, value in detector if value is not None}
    if isinstance(train, BaseModel):
        train = {field: value for field, value in train if value is not None}
    overrides: dict[str, Any] = {"dataset": dataset, "detector": detector or {}, "train": train or {}}
    if sources:
        overrides["sources"] = list(sources)
    return load_config(config_path, overrides)
