"""Scale-out and concurrency of the `annotate` flow: real flow runs, real yolov8n, real FiftyOne.

* two runs on one dataset started at once take turns (the dataset's lease) and store
  every image once, detected once;
* a 2-worker Dask LocalCluster (processes) gives the same dataset as the single-process run.
"""

import threading

import pytest

from bootstrap.store import ImageStore
from tests.helpers import PLAIN_CONFIG, latest_artifacts, needs_model


def _dataset_view(name: str) -> dict[str, tuple]:
    """``{file name: (state, [(label, confidence, bbox), ...])}`` of a dataset."""
    store = ImageStore(name)
    out = {}
    for sample in store.dataset.select_fields(["state", "predictions"]):
        boxes = sample.predictions.detections if sample.predictions else []
        out[sample.filepath.rsplit("/", 1)[-1]] = (
            sample.state,
            sorted((d.label, d.confidence, tuple(d.bounding_box)) for d in boxes),
        )
    return out


@needs_model
@pytest.mark.usefixtures("prefect_api")
def test_two_runs_at_once_on_one_dataset_store_and_detect_each_image_once(
    image_folder, dataset_name
):
    from flows.annotate import annotate

    results, errors = [], []
    both_ready = threading.Barrier(2)  # the two flow calls start at the same instant

    def run():
        try:
            both_ready.wait(timeout=60)
            results.append(
                annotate(sources=[str(image_folder)], dataset=dataset_name,
                         detector={"batch_size": 2}, chunk_size=2, config_path=PLAIN_CONFIG)
            )
        except Exception as err:  # noqa: BLE001  (reported by the assertion below)
            errors.append(err)

    runners = [threading.Thread(target=run) for _ in range(2)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=300)
    assert not errors and len(results) == 2, errors
    # One run did the work, the other waited for the lease and found nothing new.
    assert sorted(r["annotated"] for r in results) == [0, 6]
    assert sorted(r["new"] for r in results) == [0, 6]
    store = ImageStore(dataset_name)
    assert len(store.dataset) == 6 and len(set(store.dataset.values("content_hash"))) == 6
    assert store.count_pending() == 0
    # Every image was detected by exactly one run: the one that reported the work.
    worker = next(r for r in results if r["annotated"] == 6)
    assert set(store.dataset.values("prediction_run")) == {worker["run_id"]}
    # The summary artifact ends with the dataset's totals (boxes by route, review queue).
    key = f"annotate-summary-{dataset_name}"
    summary = latest_artifacts(key)[key].data
    waiting = store.status()["states"]["needs_review"]
    assert f"images waiting for review (`needs_review`) | {waiting} |" in summary
    assert "working boxes routed `accept`" in summary


@needs_model
@pytest.mark.usefixtures("prefect_api")
def test_dask_local_cluster_gives_the_same_dataset_as_one_process(image_folder, dataset_name):
    from distributed import Client, LocalCluster

    from bootstrap.detectors import load_detector
    from flows.annotate import annotate

    single = f"{dataset_name}-single"
    options = dict(sources=[str(image_folder)], detector={"batch_size": 2}, chunk_size=2,
                   config_path=PLAIN_CONFIG)
    try:
        reference = annotate(dataset=single, **options)
        # Our own cluster, passed by address (the several-machines path), so that we can ask
        # its workers afterwards how often they loaded the model.
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            parallel = annotate(dataset=dataset_name, task_runner=cluster.scheduler_address,
                                **options)
            loads = client.run(lambda: load_detector.cache_info()._asdict())
        assert parallel["annotated"] == reference["annotated"] == 6
        assert parallel["boxes"] == reference["boxes"]
        assert parallel["routed"] == reference["routed"]

        expected, got = _dataset_view(single), _dataset_view(dataset_name)
        assert got.keys() == expected.keys() and len(got) == 6
        for name, (state, boxes) in expected.items():
            assert got[name][0] == state, name
            assert [b[0] for b in got[name][1]] == [b[0] for b in boxes], name
            for (_, conf, bbox), (_, ref_conf, ref_bbox) in zip(got[name][1], boxes, strict=True):
                assert conf == pytest.approx(ref_conf, abs=1e-3)
                assert bbox == pytest.approx(ref_bbox, abs=1e-3)

        # Three chunks over two worker processes: each worker loaded the model at most once.
        calls = {w: info["hits"] + info["misses"] for w, info in loads.items()}
        assert sum(calls.values()) == 3
        assert all(info["misses"] <= 1 for info in loads.values()), loads
    finally:
        import fiftyone as fo

        if fo.dataset_exists(single):
            fo.delete_dataset(single)
