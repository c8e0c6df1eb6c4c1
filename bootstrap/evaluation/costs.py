"""What human review costs: seconds per opened image, verified box and drawn box."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    """Seconds of human time per action (defaults from labelling-tool timing studies we use)."""

    open_image: float = 1.0
    verify_box: float = 2.0
    draw_box: float = 7.0

    def review_seconds(self, opened: int, verified: int, drawn: int) -> float:
        return opened * self.open_image + verified * self.verify_box + drawn * self.draw_box

    def scratch_seconds(self, images: int, boxes: int) -> float:
        """Labelling everything by hand: open each image, draw each box."""
        return images * self.open_image + boxes * self.draw_box
