"""Export splits by content hash (pure)."""

import pytest

from bootstrap.export import ExportError, parse_split, split_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train=0.8,val=0.2", {"train": 0.8, "val": 0.2}),
        ("train=0.7, val=0.2, test=0.1", {"train": 0.7, "val": 0.2, "test": 0.1}),
        ("train=1", {"train": 1.0}),
        ("train=0.8,val=0.3", "add up to 1"),
        ("train=0.8,train=0.2", "given twice"),
        ("train:0.8", "name=fraction"),
        ("train=x,val=1", "name=fraction"),
    ],
)
def test_parse_split(text, expected):
    if isinstance(expected, dict):
        assert parse_split(text) == expected
    else:
        with pytest.raises(ExportError, match=expected):
            parse_split(text)


def test_split_of_follows_the_fractions():
    split = parse_split("train=0.8,val=0.2")
    assert split_of("00000000" + "f" * 56, split) == "train"
    assert split_of("cccccccc" + "0" * 56, split) == "train"  # 0.8 - 1e-9
    assert split_of("cccccccd" + "0" * 56, split) == "val"
    assert split_of("ffffffff" + "0" * 56, split) == "val"
