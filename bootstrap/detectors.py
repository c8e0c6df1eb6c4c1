"""Load the detector a config describes: a registered backend, Ultralytics, or several views
fused (``bootstrap.proposals``).

Other backends plug in by a model-name scheme: ``register_detector("standin:", factory)`` makes
every ``detector.model`` that starts with ``standin:`` load through ``factory(config)`` instead of
Ultralytics (the scale benchmark registers a fast stand-in detector this way).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable

from bootstrap.config import DetectorConfig
from bootstrap.detections import Detector
from bootstrap.proposals import FusedDetector
from bootstrap.yolo import UltralyticsDetector

log = logging.getLogger(__name__)

#: Builds a detector from its config; registered per model-name scheme.
DetectorFactory = Callable[[DetectorConfig], Detector]

_SCHEME = re.compile(r"^[a-z][a-z0-9_-]*:$")
_BACKENDS: dict[str, DetectorFactory] = {}


def register_detector(prefix: str, factory: DetectorFactory) -> None:
    """Load every ``detector.model`` that starts with ``prefix`` (a scheme such as ``"standin:"``)
    through ``factory(config)`` instead of Ultralytics. Registering the same factory again is a
    no-op.

    Raises:
        ValueError: ``prefix`` is not a lowercase scheme ending in ``:``, or it is registered to
            another factory already.
    """
    if not _SCHEME.fullmatch(prefix):
        raise ValueError(f"detector prefix '{prefix}' must be a lowercase scheme like 'standin:'")
    if _BACKENDS.get(prefix, factory) is not factory:
        raise ValueError(f"detector prefix '{prefix}' is registered to another factory already")
    _BACKENDS[prefix] = factory


@functools.lru_cache(maxsize=8)
def load_detector(config: DetectorConfig) -> Detector:
    """Load (once per process) the detector ``config`` describes: several views fused
    (``detector.tta``, ``detector.second_model``), a registered backend when the model name
    starts with its prefix, else Ultralytics.

    Raises:
        DetectorError: the weights cannot be found or loaded.
    """
    if config.tta or config.second_model:
        return FusedDetector(
            load_detector(config.single_view()),
            tta=config.tta,
            upscaled=(
                load_detector(config.single_view(image_size=config.upscaled_size))
                if "upscale" in config.tta else None
            ),
            second=(
                load_detector(config.single_view(model=config.second_model))
                if config.second_model else None
            ),
            iou_threshold=config.fusion_iou,
        )
    log.info("loading detector %s on %s", config.model, config.device)
    for prefix, factory in _BACKENDS.items():
        if config.model.startswith(prefix):
            return factory(config)
    return UltralyticsDetector(config)
