"""Measuring labels against ground truth, in one place.

* ``ground_truth``: read reference boxes (YOLO folder or COCO json, FiftyOne's readers) into the
  ``ground_truth`` field, classes mapped through the ontology;
* ``metrics``: one matching (FiftyOne's ``evaluate_detections``), then precision, recall and
  mAP as pure counts per threshold, class and confidence band; the quality of what would ship;
* ``costs``: the human-time cost model of review;
* ``simulation``: a reviewer played from ground truth, on throw-away clones of a dataset;
* ``report``: the markdown report and its plots;
* ``viewcache``: each proposal view run once over a folder, its raw boxes cached (``.npz``);
* ``holdout``: held-out measurement of review policies (k folds: fit on k-1, the whole review
  loop on the fold left out), offline on cached views or a dataset's stored predictions.
"""
