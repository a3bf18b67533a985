"""RoBERTa-style unigram (SentencePiece-like) tokenizers, trained offline with HF `tokenizers`.

The paper gives each language its own unigram SentencePiece tokenizer. rewire trains one with the
`tokenizers` library (no sentencepiece binary needed) and fixes the id layout that the model, the masking
and the Hugging Face export rely on:

  <s> = 0, <pad> = 1, </s> = 2, <unk> = 3, ordinary pieces ..., <mask> = vocab_size - 1

which is also the layout of the original RoBERTa tokenizers. The post-processor wraps sequences as
`<s> A </s>` and pairs as `<s> A </s></s> B </s>`, so a `tokenizer.json` exported next to a checkpoint
encodes exactly as rewire does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from rewire.errors import UserError

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIALS = (BOS, PAD, EOS, UNK)  # ids 0..3, in this order; <mask> is the last id.
NUM_SPECIAL = len(SPECIALS)
MIN_VOCAB_SIZE = 16


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Ids of the special tokens, and the tokenizer's actual vocabulary size (including <mask>)."""
  bos: int
  pad: int
  eos: int
  unk: int
  mask: int
  vocab_size: int

  @classmethod
  def layout(cls, vocab_size: int) -> "SpecialIds":
    """The ids every rewire tokenizer of `vocab_size` entries has (<s> <pad> </s> <unk> = 0..3, <mask> last)."""
    return cls(bos=0, pad=1, eos=2, unk=3, mask=vocab_size - 1, vocab_size=vocab_size)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> tokenizers.Tokenizer:
  """Trains a unigram tokenizer with rewire's id layout on `texts`.

  Normalisation is NFKC plus whitespace collapsing; words are split on spaces with the SentencePiece
  marker "▁" prepended. The trainer is asked for `vocab_size - 1` entries (4 specials + pieces) and
  `<mask>` is appended last. A small corpus can yield fewer pieces: read the actual size from
  `special_ids(tok).vocab_size`.

  Raises:
    UserError: `vocab_size` below MIN_VOCAB_SIZE, or no text to train on.
  """
  if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
    raise UserError(f"vocab_size must be an integer >= {MIN_VOCAB_SIZE}, got {vocab_size!r}")
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.normalizer = _normalizer()
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  trainer = trainers.UnigramTrainer(
      vocab_size=vocab_size - 1,
      special_tokens=list(SPECIALS),
      unk_token=UNK,
      show_progress=False,
      max_piece_length=16,
  )
  seen = [False]

  def nonempty() -> Iterable[str]:
    for t in texts:
      if t and t.strip():
        seen[0] = True
        yield t

  chars: set[str] = set()
  counter = _normalizer()  # its own instance: the tokenizer's is borrowed while it trains

  def recording() -> Iterable[str]:
    for t in nonempty():
      chars.update(counter.normalize_str(t))
      yield t

  try:
    tok.train_from_iterator(recording(), trainer=trainer)
  except Exception as e:  # tokenizers raises a bare Exception when the alphabet does not fit
    if "not large enough to contain all chars" not in str(e):
      raise
    need = len(chars - {" "}) + NUM_SPECIAL + 2  # every character as a piece, the specials, "▁" and <mask>
    raise UserError(f"data.vocab_size={vocab_size} is too small for this text: its {len(chars - {' '})} "
                    f"distinct characters must all be pieces of a unigram vocabulary; use "
                    f"data.vocab_size >= {need} (more leaves room for multi-character pieces)") from None
  if not seen[0]:
    raise UserError("cannot train a tokenizer: the training text is empty")
  tok = _canonical(tok)
  tok.add_special_tokens([tokenizers.AddedToken(MASK, lstrip=True, normalized=False, special=True)])
  tok.post_processor = processors.TemplateProcessing(
      single=f"{BOS} $A {EOS}",
      pair=f"{BOS} $A {EOS} {EOS} $B:0 {EOS}",
      special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))],
  )
  special_ids(tok)  # The layout is guaranteed by construction; fail loudly if tokenizers changes.
  return tok


def _normalizer() -> normalizers.Normalizer:
  return normalizers.Sequence([
      normalizers.NFKC(),
      normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
      normalizers.Strip(),
  ])


def _canonical(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
  """Makes training reproducible, so every run (and every host of a job) gets the same ids.

  The unigram trainer iterates hash maps, so two runs on the same text differ in two ways: scores differ
  in the last bits, and the characters it appends at the end (with scores min, min - 1e-4, ...) come
  in a random order. Scores are rounded to 1e-8 and pieces sorted by (-score, piece); the trailing run
  of pieces spaced by 0 or 1e-4 gets its scores handed out in sorted piece order.
  """
  spec = json.loads(tok.to_str())
  vocab = spec["model"]["vocab"]
  assert [p for p, _ in vocab[:NUM_SPECIAL]] == list(SPECIALS), vocab[:NUM_SPECIAL]
  pieces = sorted(((p, round(s, 8)) for p, s in vocab[NUM_SPECIAL:]), key=lambda ps: (-ps[1], ps[0]))
  start = len(pieces) - 1
  while start > 0 and any(abs(pieces[start - 1][1] - pieces[start][1] - d) < 1e-7 for d in (0, 1e-4)):
    start -= 1
  if start >= 0:
    tail = pieces[start:]
    pieces[start:] = zip(sorted(p for p, _ in tail), [s for _, s in tail])
  spec["model"]["vocab"] = [[p, 0.0] for p in SPECIALS] + [[p, s] for p, s in pieces]
  return tokenizers.Tokenizer.from_str(json.dumps(spec))


def special_ids(tok: tokenizers.Tokenizer) -> SpecialIds:
  """The special ids of `tok`, after checking rewire's layout (<s> <pad> </s> <unk> = 0..3, <mask> last).

  Raises:
    UserError: the tokenizer does not have that layout (e.g. a BERT WordPiece tokenizer).
  """
  size = tok.get_vocab_size(with_added_tokens=True)
  found = {t: tok.token_to_id(t) for t in (*SPECIALS, MASK)}
  want = {**{t: i for i, t in enumerate(SPECIALS)}, MASK: size - 1}
  if found != want:
    got = ", ".join(f"{t}={found[t]}" for t in found)
    raise UserError(f"tokenizer has the wrong special-token layout ({got}); rewire needs "
                    f"<s>=0, <pad>=1, </s>=2, <unk>=3 and <mask>=vocab_size-1={size - 1}")
  return SpecialIds.layout(size)


def special_roles(tok: tokenizers.Tokenizer) -> dict[str, int]:
  """The ids of the special tokens a tokenizer has, by role ("bos", "pad", "eos", "unk", "mask"), found by
  their strings: unlike `special_ids`, any layout, and a role the tokenizer lacks is left out."""
  ids = {role: tok.token_to_id(s) for role, s in zip(("bos", "pad", "eos", "unk", "mask"), (*SPECIALS, MASK))}
  return {role: i for role, i in ids.items() if i is not None}


def save_tokenizer(tok: tokenizers.Tokenizer, path: str) -> None:
  """Writes `tok` as a tokenizer.json, atomically (a reader never sees a half-written file)."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tokenizer-", suffix=".json.tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(tok.to_str(pretty=True))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  """Reads a tokenizer.json. UserError if it is missing or cannot be parsed."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f"tokenizer file not found: {path}")
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # tokenizers raises a bare Exception on malformed JSON.
    raise UserError(f"cannot read tokenizer {path}: {e}") from e
