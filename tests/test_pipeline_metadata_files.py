"""stats.json / schema.json are written atomically: a failure midway leaves the
previous file intact and no temporary file, on local paths and on non-local Beam filesystems."""
import json
import os

import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from pipelines import dataset_stats
from pipelines import metadata_files

OLD = {"rows": {"behaviors": {"input": 1}}}
NEW = {"rows": {"behaviors": {"input": 2}}}


class PrefixedLocalFileSystem(LocalFileSystem):
  """A non-local scheme (etatestfs://) backed by a directory: exercises the rename branch."""
  root = None
  renames = []

  @classmethod
  def scheme(cls):
    return "etatestfs"

  def _local(self, path):
    return os.path.join(self.root, path[len("etatestfs://"):])

  def join(self, basepath, *paths):
    return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

  def split(self, path):
    head, _, tail = path.rpartition("/")
    return head, tail

  def create(self, path, *args, **kwargs):
    return LocalFileSystem(None).create(self._local(path), *args, **kwargs)

  def open(self, path, *args, **kwargs):
    return LocalFileSystem(None).open(self._local(path), *args, **kwargs)

  def rename(self, sources, destinations):
    type(self).renames.append((list(sources), list(destinations)))
    return LocalFileSystem(None).rename([self._local(p) for p in sources],
                          [self._local(p) for p in destinations])

  def exists(self, path):
    return LocalFileSystem(None).exists(self._local(path))

  def delete(self, paths):
    return LocalFileSystem(None).delete([self._local(p) for p in paths])


def _write_old(path):
  with open(path, "w") as f:
    json.dump(OLD, f)


def test_local_replace_failure_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
  path = str(tmp_path / "stats.json")
  _write_old(path)

  def crash(*_):
    raise OSError("killed before the move")
  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError, match="killed before the move"):
    dataset_stats._write_json(path, NEW)
  assert json.load(open(path)) == OLD
  assert os.listdir(tmp_path) == ["stats.json"]


def test_unserializable_content_leaves_previous_file_intact(tmp_path):
  # The old writer opened (truncated) the destination before serializing.
  path = str(tmp_path / "schema.json")
  _write_old(path)
  with pytest.raises(TypeError):
    dataset_stats._write_json(path, {"bad": object()})
  assert json.load(open(path)) == OLD
  assert os.listdir(tmp_path) == ["schema.json"]


def test_local_success_writes_same_layout(tmp_path):
  path = str(tmp_path / "stats.json")
  _write_old(path)
  dataset_stats._write_json(path, NEW)
  assert open(path).read() == json.dumps(NEW, indent=2, sort_keys=True)
  assert os.listdir(tmp_path) == ["stats.json"]


def test_remote_filesystem_writes_temp_then_renames(tmp_path, monkeypatch):
  monkeypatch.setattr(PrefixedLocalFileSystem, "root", str(tmp_path))
  monkeypatch.setattr(PrefixedLocalFileSystem, "renames", [])
  path = "etatestfs://out/stats.json"
  os.makedirs(tmp_path / "out")
  _write_old(str(tmp_path / "out" / "stats.json"))
  metadata_files.write_json(path, NEW)
  [(sources, destinations)] = PrefixedLocalFileSystem.renames
  assert destinations == [path] and sources[0].startswith("etatestfs://out/.stats.json.")
  assert json.load(open(tmp_path / "out" / "stats.json")) == NEW
  assert os.listdir(tmp_path / "out") == ["stats.json"]


def test_remote_rename_failure_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
  monkeypatch.setattr(PrefixedLocalFileSystem, "root", str(tmp_path))

  def crash(self, sources, destinations):
    raise OSError("rename interrupted")
  monkeypatch.setattr(PrefixedLocalFileSystem, "rename", crash)
  os.makedirs(tmp_path / "out")
  _write_old(str(tmp_path / "out" / "stats.json"))
  with pytest.raises(OSError, match="rename interrupted"):
    metadata_files.write_json("etatestfs://out/stats.json", NEW)
  assert json.load(open(tmp_path / "out" / "stats.json")) == OLD
  assert os.listdir(tmp_path / "out") == ["stats.json"]
