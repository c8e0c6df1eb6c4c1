import os
import shutil

import pytest

from bootstrap.config import SourceConfig
from bootstrap.sources import SourceError, content_hash, iter_image_files


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


@pytest.fixture
def tree(tmp_path):
    _touch(
        tmp_path, "b.jpg", "a.JPG", "notes.txt", ".hidden.jpg", "sub/c.png", "sub/deeper/d.jpeg",
        "sub/x.gif", ".cache/e.jpg", "z/y.webp",
    )
    return tmp_path


def _names(files, root):
    return [os.path.relpath(f.uri, root) for f in files]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"path": "."}, ["a.JPG", "b.jpg", "sub/c.png", "sub/deeper/d.jpeg", "z/y.webp"]),
        ({"path": ".", "recursive": False}, ["a.JPG", "b.jpg"]),
        ({"path": ".", "extensions": [".png"]}, ["sub/c.png"]),
        ({"path": "sub/c.png"}, ["sub/c.png"]),
        ({"glob": "**/*.jp*g"}, ["a.JPG", "b.jpg", "sub/deeper/d.jpeg"]),
        ({"glob": "*.jpg"}, ["a.JPG", "b.jpg"]),
        ({"glob": "sub/*/*.jpeg"}, ["sub/deeper/d.jpeg"]),
        ({"glob": "[ab].jpg"}, ["a.JPG", "b.jpg"]),
    ],
)
def test_walk_is_sorted_filtered_and_skips_hidden(tree, monkeypatch, source, expected):
    monkeypatch.chdir(tree)
    found = list(iter_image_files([SourceConfig(**source)]))
    assert _names(found, tree) == expected
    assert all(f.size > 0 and f.mtime_ns > 0 for f in found)


def test_walk_is_lazy(tmp_path, monkeypatch):
    # A first file must come out before the second folder is even listed.
    _touch(tmp_path, "a/1.jpg", "b/2.jpg", "c/3.jpg")
    listed = []
    real_scandir = os.scandir

    def spying_scandir(path):
        listed.append(os.path.basename(path))
        return real_scandir(path)

    monkeypatch.setattr("bootstrap.sources.os.scandir", spying_scandir)
    files = iter_image_files([SourceConfig(path=str(tmp_path))])
    first = next(files)
    assert first.uri.endswith("a/1.jpg")
    assert "b" not in listed and "c" not in listed


def test_content_hash_identifies_copies_not_names(tmp_path):
    _touch(tmp_path, "one.jpg", "two.jpg")
    shutil.copy(tmp_path / "one.jpg", tmp_path / "renamed.jpg")
    assert content_hash(str(tmp_path / "one.jpg")) == content_hash(str(tmp_path / "renamed.jpg"))
    assert content_hash(str(tmp_path / "one.jpg")) != content_hash(str(tmp_path / "two.jpg"))
    assert len(content_hash(str(tmp_path / "one.jpg"))) == 64


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": "missing"}, "source path 'missing': no such file or folder"),
        ({"glob": "missing/*.jpg"}, "folder .*missing' does not exist"),
        ({"path": "s3://bucket/prefix"}, "scheme 's3://' is not supported yet"),
    ],
)
def test_bad_sources_are_named(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=message):
        list(iter_image_files([SourceConfig(**source)]))


def test_what_cannot_be_walked_or_stored_is_reported_and_the_walk_goes_on(tmp_path):
    _touch(tmp_path, "a.jpg", "sub/b.jpg")
    with open(os.fsencode(str(tmp_path)) + b"/bad\xff.jpg", "wb") as handle:
        handle.write(b"x")
    (tmp_path / "loop").symlink_to(".", target_is_directory=True)
    (tmp_path / "self.jpg").symlink_to("self.jpg")
    left_out = []
    found = list(iter_image_files([SourceConfig(path=str(tmp_path))],
                                  on_error=lambda path, why: left_out.append((path, why))))
    assert _names(found, tmp_path) == ["a.jpg", "sub/b.jpg"]  # the loop is not descended
    assert left_out == [
        (f"{tmp_path}/bad\\xff.jpg", "file name is not valid UTF-8 (the database stores paths "
         "as UTF-8 text); rename it, e.g. with `convmv -f latin1 -t utf8`"),
        (f"{tmp_path}/self.jpg", "cannot read: Too many levels of symbolic links"),
    ]


def test_a_hidden_file_named_as_the_source_is_reported(tmp_path):
    _touch(tmp_path, ".x.jpg")
    left_out = []
    found = list(iter_image_files([SourceConfig(path=str(tmp_path / ".x.jpg"))],
                                  on_error=lambda path, why: left_out.append((path, why))))
    assert found == [] and left_out == [
        (str(tmp_path / ".x.jpg"), "hidden file (its name starts with '.'): not registered; rename it")
    ]
