"""Tests for rewire.data.sources (source strings → documents) and the bundled corpus builder."""

import gzip
import importlib.util
import json
import os

import pytest

from rewire.data import sources
from rewire.errors import UserError


def _write(path, text, gz=False):
  opener = gzip.open if gz else open
  with opener(path, "wt", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def _jsonl(records):
  return "".join(json.dumps(r) + "\n" for r in records)


def test_txt_documents_split_at_blank_lines(tmp_path):
  _write(tmp_path / "a.txt", "first doc\nstill first\n\n\n  \nsecond doc\n \t\nthird\n\n")
  docs = sources.load_documents(f"files:{tmp_path}/a.txt")
  assert docs == ["first doc\nstill first", "second doc", "third"]


def test_jsonl_gz_txt_gz_sorted_file_order(tmp_path):
  _write(tmp_path / "b.jsonl.gz", _jsonl([{"content": "b1"}, {"content": " b2 "}]), gz=True)
  _write(tmp_path / "a.txt.gz", "a1\n\na2", gz=True)
  _write(tmp_path / "c.jsonl", _jsonl([{"content": "c1", "x": 1}]) + "\n")
  # Patterns in reverse order: the files are still read in sorted order, each once.
  source = f"files:{tmp_path}/c.jsonl,{tmp_path}/*.gz,{tmp_path}/a.*"
  docs = sources.load_documents(source, text_field="content")
  assert docs == ["a1", "a2", "b1", "b2", "c1"]


def test_jsonl_missing_field_names_file_and_line(tmp_path):
  path = _write(tmp_path / "d.jsonl", _jsonl([{"text": "ok"}, {"body": "no text"}]))
  with pytest.raises(UserError, match=r"d\.jsonl:2: no field 'text'"):
    sources.load_documents(f"files:{path}")


def test_jsonl_bad_json_names_line(tmp_path):
  path = _write(tmp_path / "e.jsonl", '{"text": "ok"}\n{not json}\n')
  with pytest.raises(UserError, match=r"e\.jsonl:2: not valid JSON"):
    sources.load_documents(f"files:{path}")


def test_missing_file_names_pattern(tmp_path):
  with pytest.raises(UserError, match="nothing-here"):
    sources.load_documents(f"files:{tmp_path}/nothing-here/*.txt")


def test_unsupported_extension(tmp_path):
  path = _write(tmp_path / "f.csv", "a,b\n")
  with pytest.raises(UserError, match=r"f\.csv: unsupported file type"):
    sources.load_documents(f"files:{path}")


def test_empty_corpus(tmp_path):
  path = _write(tmp_path / "empty.txt", "\n\n   \n\t\n")
  with pytest.raises(UserError, match=r"corpus .*empty\.txt.* is empty"):
    sources.load_documents(f"files:{path}")


@pytest.mark.parametrize("bad", ["cc100", "file:x.txt", "hf:onlyname", "hf:a:b:c:d", "", "  "])
def test_bad_source_string(bad):
  with pytest.raises(UserError) as e:
    sources.load_documents(bad)
  assert repr(bad.strip()) in str(e.value) or repr(bad) in str(e.value)
  assert "hf:NAME" in str(e.value)


def test_bundled_en_web():
  docs = sources.load_documents("bundled:en_web")
  assert len(docs) == 1189  # One document per chapter of the World English Bible.
  assert docs[0].startswith("In the beginning God created the heavens and the earth.")
  assert docs[-1].startswith("He showed me a river of water of life")
  assert not any("{" in d or "}" in d or "  " in d for d in docs)
  assert 750_000 < sum(len(d.split()) for d in docs) < 780_000


def test_bundled_unknown_lists_available():
  with pytest.raises(UserError, match=r"unknown bundled corpus 'fr_web'.*en_web"):
    sources.load_documents("bundled:fr_web")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
  datasets = pytest.importorskip("datasets")
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_hf_local_folder(tmp_path, hf_cache):
  folder = tmp_path / "mycorpus"
  folder.mkdir()
  _write(folder / "train.jsonl", _jsonl([{"text": f"doc {i}", "id": i} for i in range(5)]
                                        + [{"text": "", "id": 5}]))
  assert sources.load_documents(f"hf:{folder}:train") == [f"doc {i}" for i in range(5)]
  assert sources.load_documents(f"hf:{folder}:train[:2]") == ["doc 0", "doc 1"]
  with pytest.raises(UserError, match=r"no field 'body'; its fields: .*text"):
    sources.load_documents(f"hf:{folder}:train", text_field="body")


def test_hf_unloadable_names_source(tmp_path, hf_cache):
  with pytest.raises(UserError, match="hf:.*no-such-dataset.*:train"):
    sources.load_documents(f"hf:{tmp_path}/no-such-dataset:train")


def test_build_script_strips_notes_without_gluing_words():
  path = os.path.join(os.path.dirname(__file__), "..", "tools", "build_en_web.py")
  spec = importlib.util.spec_from_file_location("build_en_web", path)
  build = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build)
  assert build.strip_notes('In the beginning God{After "God," a note.} created it.') == (
      "In the beginning God created it.")
  assert build.strip_notes('that the {TR adds "chief"}priests came') == "that the priests came"
  assert build.strip_notes("your seed{or, offspring}.  Amen") == "your seed. Amen"
  assert build.strip_notes("a{x}b") == "a b"
  assert build.strip_notes("{See Romans 14:23} {TR places it}") == ""
