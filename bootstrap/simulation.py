"""Run a review simulation on a throw-away clone, so the real dataset is never touched."""

from __future__ import annotations

import uuid
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
    import fiftyone as fo

    name = f"{store.name}-simulation-{uuid.uuid4().hex[:6]}"
    store.dataset.clone(name)
    try:
        clone = ImageStore(name)
        import_ground_truth(clone, ground_truth, Ontology(ontology_config))
        clone.apply_triage(triage)
        return simulate_review(clone, budget, cost)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def cost_quality_curve(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    budget_fractions: tuple[float | None, ...] = (0.0, 0.125, 0.25, 0.5, None),
    cost: CostModel = CostModel(),
    ontology_config: OntologyConfig | None = None,
) -> list[tuple[str, SimulationReport]]:
    """One review simulation per budget (a fraction of the dataset's images; None: every image
    that needs review), for the cost-vs-quality curve. Each runs on its own clone."""
    images = len(store.dataset)
    points = []
    for fraction in budget_fractions:
        budget = None if fraction is None else int(round(fraction * images))
        name = "all" if budget is None else str(budget)
        points.append((name, run_simulation(store, ground_truth, triage, budget, cost, ontology_config)))
    return points
