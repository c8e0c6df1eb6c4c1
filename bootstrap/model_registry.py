"""Model versions: every fine-tuned detector of a dataset, what it was trained on, which is current.

A dataset's versions live in ``<train.models_dir>/<dataset>/``::

    v1/demo-v1.pt        the weights (named after the version: the name the boxes record)
    v1/version.json      what it was trained on and how it scored (``ModelVersion``)
    current.json         {"current": "v1", "history": [...]}: the version that replaced
                         ``detector.model``, and every promotion or refusal

A version is referred to as ``v2``, ``demo-v2`` or ``demo-v2.pt``; ``current`` is the current
one. Plain files (JSON, written atomically), no database: the folder can be copied or backed up
as a whole, and the CLI lists it without starting FiftyOne.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

VERSION_FILE = "version.json"
CURRENT_FILE = "current.json"
_VERSION_ID = re.compile(r"^v(\d+)$")


class RegistryError(ValueError):
    """A model version that does not exist, or a registry folder that is not one."""


@dataclass(frozen=True)
class ModelVersion:
    """One fine-tuned detector and its record.

    Attributes:
        version: ``v1``, ``v2``, ... in order of training.
        dataset: the dataset whose final labels it was trained on.
        weights: path of the weights file.
        classes: its class list (the dataset's classes, in export order).
        base_weights: the weights it was fine-tuned from (a path or model name).
        base_version: the version those were, when they were one.
        export_manifest_hash: SHA-256 of the training export's manifest (volatile fields left
            out): which labels it saw.
        images: images per split of the training export; ``compared_on`` how many validation
            images the comparison used and whose labels (``reviewed`` or ``final``).
        metrics: the version's metrics on the validation split (precision, recall, mAP50,
            mAP50-95); ``base_metrics`` those of the detector it was compared with, on the same
            images (None when that detector has other classes).
        promoted: whether it became the current detector when it was trained.
        history: per epoch: losses, validation metrics, seconds.
    """

    version: str
    dataset: str
    weights: str
    classes: list[str]
    base_weights: str
    created_at: str
    base_version: str | None = None
    export_manifest_hash: str | None = None
    export_dir: str | None = None
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, int] = field(default_factory=dict)
    compared_on: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    base_metrics: dict[str, float] | None = None
    promoted: bool = False
    decision: str = ""
    settings: dict = field(default_factory=dict)
    device: str = ""
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        """The name predictions record for it (``Path(weights).name``, e.g. ``demo-v2.pt``)."""
        return Path(self.weights).name

    def to_dict(self) -> dict:
        return asdict(self)


def version_name(dataset: str, version: str) -> str:
    """The weights' file name of ``version``: ``<dataset>-<version>.pt``."""
    return f"{dataset}-{version}.pt"


class ModelRegistry:
    """The model versions of one dataset under ``models_dir``."""

    def __init__(self, models_dir: str | Path, dataset: str):
        self.dataset = dataset
        self.root = Path(models_dir).expanduser().resolve() / dataset

    # -- reading ---------------------------------------------------------------------------

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            match = _VERSION_ID.fullmatch(folder.name)
            record = folder / VERSION_FILE
            if match and record.is_file():
                found.append((int(match.group(1)), _read_version(record)))
        return [version for _, version in sorted(found, key=lambda item: item[0])]

    def current_id(self) -> str | None:
        """The id of the version that replaced ``detector.model`` (None: the config's model)."""
        state = self._state()
        return state.get("current")

    def current(self) -> ModelVersion | None:
        current = self.current_id()
        return self.get(current) if current else None

    def history(self) -> list[dict]:
        """Every promotion or refusal, oldest first."""
        return list(self._state().get("history", []))

    def parse_reference(self, reference: str) -> str | None:
        """The version id ``reference`` names (``v2``, ``<dataset>-v2``, ``<dataset>-v2.pt``,
        ``current``), or None when it names no version of this dataset (a weights name)."""
        if reference == "current":
            return self.current_id()
        name = Path(reference).name
        for prefix in ("", f"{self.dataset}-"):
            for suffix in ("", ".pt"):
                if name.startswith(prefix) and name.endswith(suffix):
                    core = name[len(prefix): len(name) - len(suffix) if suffix else None]
                    if _VERSION_ID.fullmatch(core) and (prefix or not suffix):
                        return core
        return None

    def get(self, reference: str) -> ModelVersion:
        """The version ``reference`` names.

        Raises:
            RegistryError: no such version (the message lists those there are).
        """
        version = self.parse_reference(reference)
        record = self.root / (version or "") / VERSION_FILE
        if version is None or not record.is_file():
            have = ", ".join(v.version for v in self.versions()) or "none"
            raise RegistryError(
                f"dataset '{self.dataset}' has no model version '{reference}' in {self.root}; "
                f"it has: {have}"
            )
        return _read_version(record)

    def find(self, reference: str) -> ModelVersion | None:
        """The version ``reference`` names, or None when it names none (a plain weights name).

        Raises:
            RegistryError: ``current`` while no version is current, or a version not registered.
        """
        if reference == "current" and self.current_id() is None:
            raise RegistryError(
                f"no model version of dataset '{self.dataset}' is current yet (in {self.root}); "
                "train one (bootstrap train) or name weights"
            )
        if self.parse_reference(reference) is None:
            return None
        return self.get(reference)

    # -- writing ---------------------------------------------------------------------------

    def next_id(self) -> str:
        numbers = [int(_VERSION_ID.fullmatch(v.version).group(1)) for v in self.versions()]
        return f"v{max(numbers, default=0) + 1}"

    def new_folder(self) -> tuple[str, Path]:
        """Reserve the next version id: its folder is created now (``mkdir`` is atomic, so two
        trainings never take the same id); its record is written by ``register``."""
        self.root.mkdir(parents=True, exist_ok=True)
        number = int(self.next_id()[1:])
        while True:
            folder = self.root / f"v{number}"
            try:
                folder.mkdir()
                return folder.name, folder
            except FileExistsError:  # reserved by a training that has not registered yet
                number += 1

    def register(self, version: ModelVersion) -> ModelVersion:
        """Write ``version``'s record (its folder and weights exist already)."""
        _write_json(self.root / version.version / VERSION_FILE, version.to_dict())
        return version

    def set_current(self, version: str | None, reason: str) -> None:
        """Make ``version`` (None: the config's model) the dataset's detector; record why."""
        state = self._state()
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "from": state.get("current"), "to": version, "reason": reason,
        }
        self._write_state({"current": version, "history": state.get("history", []) + [entry]})

    def note(self, reason: str) -> None:
        """Record a decision that kept the current detector (a version not promoted)."""
        state = self._state()
        current = state.get("current")
        entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "from": current, "to": current, "reason": reason}
        self._write_state({"current": current, "history": state.get("history", []) + [entry]})

    def _state(self) -> dict:
        path = self.root / CURRENT_FILE
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RegistryError(f"{path}: not valid JSON ({err}); fix or delete it") from None

    def _write_state(self, state: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / CURRENT_FILE, state)


def _read_version(path: Path) -> ModelVersion:
    try:
        raw = json.loads(path.read_text())
        return ModelVersion(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise RegistryError(f"{path}: not a model version record ({err})") from None


def _write_json(path: Path, data: dict) -> None:
    # Atomic: a reader (or a crash) sees the old record or the new one, never half of one.
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
