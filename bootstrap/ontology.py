"""Map the model's classes onto the dataset's classes: rename, merge, drop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bootstrap.config import OntologyConfig
from bootstrap.detections import Detections


class OntologyError(ValueError):
    """The ontology names classes the model does not have."""


class Ontology:
    """A model-class -> dataset-class mapping; identity when no config is given."""

    def __init__(self, config: OntologyConfig | None, model_classes: Sequence[str] = ()):
        self._mapping = dict(config.mapping) if config is not None else None
        self.classes: tuple[str, ...] = (
            config.dataset_classes if config is not None else tuple(model_classes)
        )
        if self._mapping is not None and model_classes:
            unknown = sorted(set(self._mapping) - set(model_classes))
            if unknown:
                raise OntologyError(
                    f"ontology.mapping: {unknown} are not classes of the model; "
                    f"the model has {len(model_classes)} classes, e.g. {list(model_classes)[:8]}"
                )

    def dataset_class(self, model_class: str) -> str | None:
        """The dataset class for ``model_class``, or ``None`` when it is dropped."""
        if self._mapping is None:
            return model_class
        return self._mapping.get(model_class)

    def apply(self, detections: Detections) -> Detections:
        """Relabel ``detections`` with dataset classes and drop boxes of unmapped classes."""
        if self._mapping is None or len(detections) == 0:
            return detections
        labels = np.array(
            [self._mapping.get(name) for name in detections.model_label], dtype=object
        )
        keep = np.array([label is not None for label in labels], dtype=bool)
        return detections.with_labels(labels)[keep]
