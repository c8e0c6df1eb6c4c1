"""Measuring labels against ground truth, in one place.

* ``ground_truth``: read reference boxes (YOLO folder or COCO json, FiftyOne's readers) into the
  ``ground_truth`` field, classes mapped through the ontology;
* ``metrics``: one matching (FiftyOne's ``evaluate_detections``), then precision, recall and
  mAP as pure counts per threshold, class and confidence band; the quality of what would ship;
* ``costs``: the human-time cost model of review;
* ``simulation``: a reviewer played from ground truth, on throw-away clones of a dataset;
* ``report``: the markdown report and its plots.
"""
