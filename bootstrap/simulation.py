"""Run review simulations on throw-away clones, so the real dataset is never touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bootstrap.config import OntologyConfig, TriageConfig
from bootstrap.evaluate import import_ground_truth, simulate_review
from bootstrap.ontology import Ontology
from bootstrap.review import CostModel, SimulationReport
from bootstrap.store import ImageStore


def run_simulation(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    budget: int | None = None,
    cost: CostModel = CostModel(),
    ontology_config: OntologyConfig | None = None,
) -> SimulationReport:
    """Clone ``store``'s dataset, import ground truth, (re)triage with ``triage``, play the
    reviewer on up to ``budget`` images and report cost and quality. The clone is deleted."""
    with _prepared_clone(store, ground_truth, triage, ontology_config) as prepared:
        return simulate_review(prepared, budget, cost)


def cost_quality_curve(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    budget_fractions: tuple[float | None, ...] = (0.0, 0.125, 0.25, 0.5, None),
    cost: CostModel = CostModel(),
    ontology_config: OntologyConfig | None = None,
) -> list[tuple[str, SimulationReport]]:
    """One review simulation per budget (a fraction of the dataset's images; None: every image
    that needs review), for the cost-vs-quality curve. Ground truth is imported and triage run
    once; each budget then plays the reviewer on its own copy of that."""
    images = len(store.dataset)
    points = []
    with _prepared_clone(store, ground_truth, triage, ontology_config) as prepared:
        for fraction in budget_fractions:
            budget = None if fraction is None else int(round(fraction * images))
            with _throwaway_clone(prepared, "budget") as scratch:
                report = simulate_review(scratch, budget, cost)
            points.append(("all" if budget is None else str(budget), report))
    return points


@contextmanager
def _prepared_clone(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    ontology_config: OntologyConfig | None,
) -> Iterator[ImageStore]:
    """A clone of ``store`` with ground truth imported and triaged with ``triage``."""
    with _throwaway_clone(store, "simulation") as clone:
        import_ground_truth(clone, ground_truth, Ontology(ontology_config))
        clone.apply_triage(triage)
        yield clone


@contextmanager
def _throwaway_clone(store: ImageStore, label: str) -> Iterator[ImageStore]:
    import fiftyone as fo

    name = f"{store.name}-{label}-{uuid.uuid4().hex[:6]}"
    store.dataset.clone(name)
    try:
        yield ImageStore(name)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
