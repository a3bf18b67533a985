"""Tests for rewire.tasks.loading: task examples from hub-style folders, TFDS array_record, local files.

The hub is unreachable here, so the fixtures are tiny datasets in the real schemas, built at test time and
read through the same code paths: `datasets.load_dataset` on folders laid out like the hub repos (README
YAML with configs and ClassLabel features), `tfds.data_source` on array_record data prepared by
subclasses of TFDS's own xnli and squad builders, and .jsonl/.tsv/.json/.parquet files.
"""

import gzip
import json

import pytest

from rewire.data import sources
from rewire.errors import UserError
from rewire.tasks import loading, schema

_CLASS_LABEL = """  - name: label
    dtype:
      class_label:
        names:
          '0': entailment
          '1': neutral
          '2': contradiction
"""


def _hub_folder(root, configs, label=True):
  """A folder laid out like a hub dataset: README YAML (configs, features) + one .jsonl per split."""
  yaml = ["---", "dataset_info:"]
  for config, splits in configs.items():
    yaml += [f"- config_name: {config}", "  features:"]
    if label:
      yaml += ["  - name: premise", "    dtype: string", "  - name: hypothesis", "    dtype: string"]
      yaml.append(_CLASS_LABEL.rstrip("\n"))
  yaml.append("configs:")
  for config, splits in configs.items():
    yaml += [f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
      yaml += [f"  - split: {split}", f"    path: {config}/{split}-*"]
      (root / config).mkdir(parents=True, exist_ok=True)
      (root / config / f"{split}-00000-of-00001.jsonl").write_text(
          "".join(json.dumps(r) + "\n" for r in rows))
  (root / "README.md").write_text("\n".join(yaml + ["---", ""]))
  return str(root)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
  datasets = pytest.importorskip("datasets")
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_hf_xnli_and_multi_nli_class_labels(tmp_path, hf_cache):
  xnli = _hub_folder(tmp_path / "xnli", {"de": {"test": [
      {"premise": "Er geht.", "hypothesis": "Er bewegt sich.", "label": 0},
      {"premise": "Er geht.", "hypothesis": "Er schläft.", "label": 2}]}})
  assert loading.load_task_split(f"hf:{xnli}:de:test", task="nli", lang="de") == [
      {"premise": "Er geht.", "hypothesis": "Er bewegt sich.", "label": "entailment"},
      {"premise": "Er geht.", "hypothesis": "Er schläft.", "label": "contradiction"}]
  mnli = _hub_folder(tmp_path / "multi_nli", {"default": {
      "train": [{"premise": "a", "hypothesis": "b", "label": 1}],
      "validation_matched": [{"premise": "c", "hypothesis": "d", "label": -1},
                             {"premise": "e", "hypothesis": "f", "label": 2}]}})
  assert loading.load_task_split(f"hf:{mnli}:train", task="nli")[0]["label"] == "neutral"
  dev = loading.load_task_split(f"hf:{mnli}:validation_matched", task="nli")
  assert dev == [{"premise": "e", "hypothesis": "f", "label": "contradiction"}]  # -1 (no gold) dropped.


def test_hf_squad_and_mlqa_configs(tmp_path, hf_cache):
  row = {"id": "5733be284776f41900661182", "title": "T", "context": "Alpha beta gamma.",
         "question": "Which letter?", "answers": {"text": ["beta"], "answer_start": [6]}}
  squad = _hub_folder(tmp_path / "squad", {"plain_text": {"validation": [row]}}, label=False)
  (ex,) = loading.load_task_split(f"hf:{squad}:plain_text:validation", task="qa")
  assert ex == {k: row[k] for k in ("id", "question", "context", "answers")}
  mlqa = _hub_folder(tmp_path / "mlqa", {"mlqa.de.de": {"test": [
      {k: v for k, v in row.items() if k != "title"}]}}, label=False)
  assert loading.load_task_split(f"hf:{mlqa}:mlqa.de.de:test", task="qa", lang="de")[0]["id"] == row["id"]


def test_hf_missing_field_names_row_and_fields(tmp_path, hf_cache):
  folder = tmp_path / "bad"
  folder.mkdir()
  (folder / "test.jsonl").write_text(json.dumps({"sentence1": "a", "label": 0}) + "\n")
  with pytest.raises(UserError, match=r"row 0: missing field 'hypothesis' or 'sentence2'; its fields: "
                                      r"sentence1, label"):
    loading.load_task_split(f"hf:{folder}:test", task="nli")


def test_hf_script_dataset_hint_and_cc100_config(monkeypatch):
  datasets = pytest.importorskip("datasets")
  calls = []

  def fake_load(name, config=None, split=None, streaming=False):
    calls.append((name, config, split))
    raise RuntimeError("Dataset scripts are no longer supported, but found cc100.py")

  monkeypatch.setattr(datasets, "load_dataset", fake_load)
  with pytest.raises(UserError, match=r"'hf:cc100:de:train'.*loading script.*files:PATTERN"):
    sources.load_documents("hf:cc100:de:train")
  assert calls == [("cc100", "de", "train")]  # cc100's configs are language codes.
  with pytest.raises(UserError, match=r"hf:xnli:de:test.*no longer supported"):
    loading.load_task_split("hf:xnli:de:test", task="nli")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """array_record data prepared by TFDS's own xnli and squad builders, fed from memory (no TF, no net)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.datasets.squad import squad_dataset_builder as squad
  from tensorflow_datasets.text import xnli

  class TinyXnli(xnli.Xnli, skip_registration=True):
    name = "xnli"

    def _split_generators(self, dl_manager):
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      for i in range(3):
        yield i, {"premise": {lang: f"p{i}-{lang}" for lang in xnli._LANGUAGES},
                  "hypothesis": {lang: f"h{i}-{lang}" for lang in xnli._LANGUAGES}, "label": i}

  class TinySquad(squad.Builder, skip_registration=True):
    name = "squad"

    @classmethod
    def _get_pkg_dir_path(cls):
      return squad.Builder._get_pkg_dir_path()

    def _split_generators(self, dl_manager):
      return {"validation": self._generate_examples()}

    def _generate_examples(self):
      yield "a", {"id": "q1", "title": "T", "context": "Alpha beta gamma.", "question": "Which?",
                  "answers": {"text": ["beta", "beta gamma"], "answer_start": [6, 6]}}

  root = str(tmp_path_factory.mktemp("tfds"))
  TinyXnli(data_dir=root, file_format="array_record").download_and_prepare()
  TinySquad(data_dir=root, config="v1.1", file_format="array_record").download_and_prepare()
  assert tfds.data_source("xnli", split="test", data_dir=root) is not None
  return root


def test_tfds_xnli_picks_language_and_label_names(tfds_dir):
  got = loading.load_task_split("tfds:xnli:test", task="nli", lang="de", data_dir=tfds_dir)
  assert sorted(got, key=lambda e: e["premise"]) == [
      {"premise": "p0-de", "hypothesis": "h0-de", "label": "entailment"},
      {"premise": "p1-de", "hypothesis": "h1-de", "label": "neutral"},
      {"premise": "p2-de", "hypothesis": "h2-de", "label": "contradiction"}]
  english = loading.load_task_split("tfds:xnli:test", task="nli", data_dir=tfds_dir)  # No lang: English.
  assert {e["premise"] for e in english} == {"p0-en", "p1-en", "p2-en"}
  with pytest.raises(UserError, match=r"row \d: field 'premise' has no 'xx' text"):
    loading.load_task_split("tfds:xnli:test", task="nli", lang="xx", data_dir=tfds_dir)


def test_tfds_squad_config_and_decoding(tfds_dir):
  (ex,) = loading.load_task_split("tfds:squad:v1.1:validation", task="qa", data_dir=tfds_dir)
  assert ex == {"id": "q1", "question": "Which?", "context": "Alpha beta gamma.",
                "answers": {"text": ["beta", "beta gamma"], "answer_start": [6, 6]}}
  assert all(type(s) is int for s in ex["answers"]["answer_start"])


def test_tfds_unknown_dataset(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError, match=r"cannot load 'tfds:no_such_set:test' with tfds.data_source"):
    loading.load_task_split("tfds:no_such_set:test", task="nli", data_dir=str(tmp_path))


def test_files_jsonl_gz_tsv_and_language_column(tmp_path):
  with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
    f.write(json.dumps({"premise": "p", "hypothesis": "h", "label": "Neutral"}) + "\n\n")
  # XNLI's own xnli.test.tsv: all languages in one file, quotes left alone (QUOTE_NONE).
  (tmp_path / "xnli.test.tsv").write_text(
      "language\tgold_label\tsentence1\tsentence2\n"
      'de\tentailment\tEr sagt "ja".\tEr stimmt zu.\n'
      "en\tcontradiction\tHe says yes.\tHe says no.\n"
      "de\t-\tOhne Label.\tOhne Label.\n")
  assert loading.load_task_split(f"files:{tmp_path}/a.jsonl.gz", task="nli") == [
      {"premise": "p", "hypothesis": "h", "label": "neutral"}]
  assert loading.load_task_split(f"files:{tmp_path}/xnli.test.tsv", task="nli", lang="de") == [
      {"premise": 'Er sagt "ja".', "hypothesis": "Er stimmt zu.", "label": "entailment"}]
  assert len(loading.load_task_split(f"files:{tmp_path}/*.tsv", task="nli")) == 2  # No lang: every row.


def test_files_squad_json_and_parquet(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq
  squad = {"data": [{"title": "T", "paragraphs": [{"context": "Alpha beta.", "qas": [
      {"id": "x1", "question": "Q?", "answers": [{"text": "beta", "answer_start": 6}]}]}]}]}
  (tmp_path / "dev-context-de-question-de.json").write_text(json.dumps(squad))
  (ex,) = loading.load_task_split(f"files:{tmp_path}/*.json", task="qa")
  assert ex["answers"] == {"text": ["beta"], "answer_start": [6]} and ex["context"] == "Alpha beta."
  rows = [{"id": "y", "question": "Q", "context": "C a", "answers": {"text": ["a"], "answer_start": [2]}},
          {"id": "z", "question": "Q", "context": "C b"}]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet")
  with pytest.raises(UserError, match=r"qa\.parquet: row 1: missing field 'answers' \(null\)"):
    loading.load_task_split(f"files:{tmp_path}/qa.parquet", task="qa")
  pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "qa.parquet")
  assert loading.load_task_split(f"files:{tmp_path}/qa.parquet", task="qa")[0]["answers"]["answer_start"] == [2]


def test_files_errors_name_file_line_and_field(tmp_path):
  (tmp_path / "d.jsonl").write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 0}) + "\n"
                                    + json.dumps({"premise": "p", "label": 1}) + "\n")
  with pytest.raises(UserError, match=r"d\.jsonl:2: missing field 'hypothesis' or 'sentence2'"):
    loading.load_task_split(f"files:{tmp_path}/d.jsonl", task="nli")
  (tmp_path / "e.tsv").write_text("id\tquestion\tcontext\tanswer_text\tanswer_start\n"
                                  "1\tQ\tC x\tx\t2\n2\tQ\tC y\ty\n")
  with pytest.raises(UserError, match=r"e\.tsv:3: 4 tab-separated fields, the header has 5"):
    loading.load_task_split(f"files:{tmp_path}/e.tsv", task="qa")
  (tmp_path / "f.jsonl").write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 7}) + "\n")
  with pytest.raises(UserError, match=r"f\.jsonl:1: label 7 is outside the classes"):
    loading.load_task_split(f"files:{tmp_path}/f.jsonl", task="nli")
  (tmp_path / "g.jsonl").write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": "-"}) + "\n")
  with pytest.raises(UserError, match=r"holds no labelled nli example: the split is empty"):
    loading.load_task_split(f"files:{tmp_path}/g.jsonl", task="nli")
  with pytest.raises(UserError, match=r"unsupported file type"):
    loading.load_task_split(f"files:{tmp_path}/*.jsonl,{tmp_path}/e.tsv,{__file__}", task="nli")


@pytest.mark.parametrize("source", ["xnli:test", "hf:onlyname", "tfds:a:b:c:d", "bundled:verse_nli", ""])
def test_bad_source_strings(source):
  with pytest.raises(UserError):
    loading.load_task_split(source, task="nli")


def test_bundled_tasks_and_languages():
  assert len(loading.load_task_split("bundled:verse_nli:train", task="nli")) == 6000
  test = {lang: loading.load_task_split("bundled:verse_qa:test", task="qa", lang=lang)
          for lang in ("en", "es", "ja", "uk")}
  assert all([e["id"] for e in test[lang]] == [e["id"] for e in test["en"]] for lang in test)
  assert test["es"][0]["question"] != test["en"][0]["question"] != test["uk"][0]["question"]
  with pytest.raises(UserError, match=r"no bundled verse_nli split 'train' in language 'es'.*"
                                      r"verse_genre:test \(en, es, ja, uk\).*verse_nli:test \(en, es, ja, uk\)"):
    loading.load_task_split("bundled:verse_nli:train", task="nli", lang="es")
  with pytest.raises(UserError, match=r"not a qa task"):
    loading.load_task_split("bundled:verse_nli:test", task="qa")
  with pytest.raises(UserError, match=r"unknown task 'ner'"):
    loading.load_task_split("bundled:verse_nli:test", task="ner")


def test_label_name_mapping():
  names = ["entailment", "neutral", "contradiction"]
  assert [schema.label_name(v, names, "w") for v in (0, "1", 2.0, -1, "-", " Neutral ")] == [
      "entailment", "neutral", "contradiction", None, None, "neutral"]
  assert schema.label_name(1, ["yes", "no"], "w") == "no"
  for bad in (True, None, 1.5, [0]):
    with pytest.raises(UserError, match="^w: label"):
      schema.label_name(bad, names, "w")


def test_tfds_split_as_a_text_source(tfds_dir):
  docs = sources.load_documents("tfds:squad:v1.1:validation", text_field="context", tfds_data_dir=tfds_dir)
  assert docs == ["Alpha beta gamma."]
  units = sources.plan_units("tfds:squad:v1.1:validation", parts_per_file=2, tfds_data_dir=tfds_dir)
  assert [u.name for u in units] == [f"tfds:squad:v1.1:validation (part {i}/2)" for i in (1, 2)]
