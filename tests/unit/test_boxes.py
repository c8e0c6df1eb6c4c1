"""Box geometry (pure numpy)."""

import numpy as np
import pytest

from bootstrap.boxes import mirror_xyxy, pairwise_iou, relative_xywh, xyxy_to_xywh


def test_pairwise_iou_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (7, 4)), rng.uniform(0, 1, (5, 4))
    b[0] = a[0]  # identical boxes: IoU 1
    a[1, 2:] = 0  # a zero-area box: IoU 0, not NaN

    def xyxy(boxes):
        return torch.from_numpy(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1))

    expected = np.nan_to_num(box_iou(xyxy(a), xyxy(b)).numpy())
    assert pairwise_iou(a, b) == pytest.approx(expected)
    assert pairwise_iou(a, b)[0, 0] == pytest.approx(1.0) and not pairwise_iou(a, b)[1].any()
    assert pairwise_iou(a[:0], b).shape == (0, 5)


def test_conversions_and_mirror():
    xyxy = np.array([[10.0, 20.0, 60.0, 70.0]])
    assert xyxy_to_xywh(xyxy).tolist() == [[10.0, 20.0, 50.0, 50.0]]
    assert relative_xywh(xyxy, (100, 200)).tolist() == [[0.1, 0.1, 0.5, 0.25]]
    # A box past the right edge is clipped to the image; no boxes give a (0, 4) array.
    assert relative_xywh(np.array([[90.0, 0, 150, 10]]), (100, 100))[0, 2] == pytest.approx(0.6)
    assert relative_xywh(np.zeros((0, 4)), (100, 100)).shape == (0, 4)
    assert mirror_xyxy(xyxy, 100).tolist() == [[40.0, 20.0, 90.0, 70.0]]
    assert mirror_xyxy(mirror_xyxy(xyxy, 100), 100).tolist() == xyxy.tolist()
