r"""Reproduce Transfer Learning Studio run __RUN__ with torch and transformers only.

    python train.py DATA [--weights ENCODER_FOLDER] [--out model.safetensors]

DATA is the data the run used (__ROOT__): its CSV, TSV or JSONL file,
or its folder of class folders of .txt files, or a .zip of either. The plan below is the run's freeze map: its layer
groups by name, the phases that train them and the settings. Edit it and run again to try
something else. The exact train/validation (and test) texts are listed at the end of this file by
key (the start of each text's SHA-256): the script carries none of your texts, it finds them in
DATA. On a CPU, or a GPU with the same mixed precision, it repeats the run's epochs; the studio's
tests check that.
"""

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import math
import random
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import RandomSampler, TensorDataset
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging

DATA_USED = __DATA_USED__
DATA_HELP = "the CSV, TSV or JSONL file, the folder of .txt files, or their .zip, that the run used"
WEIGHTS_HELP = (
    "a Hugging Face folder with the pretrained encoder's weights (not a bundle's encoder/, which has "
    "none); default: its pip package, else the hub (cache first)"
)
NOUN = "texts"

# ---- the plan ----------------------------------------------------------------------------------
BACKBONE = __BACKBONE__  # the encoder, by the studio's name
WEIGHTS = __WEIGHTS__  # bundled (a pip package), hub (Hugging Face), or none (random initialisation)
WEIGHTS_DETAIL = __WEIGHTS_DETAIL__
HUB_NAME = __HUB_NAME__
HUB_REVISION = __HUB_REVISION__  # the hub snapshot the run trained from
BUNDLED_PACKAGE = __BUNDLED_PACKAGE__  # ships the encoder's folder (in its model/)
CLASSES = __CLASSES__
CLASSIFIER = __CLASSIFIER__  # the new head on the pooled embedding
MAX_LENGTH = __MAX_LENGTH__  # word pieces per text: longer texts are cut
POOLING = __POOLING__  # mean: over the real tokens; cls: the first token
TEXT_COLUMN = __TEXT_COLUMN__  # the table's text column; None: one .txt file per text

# Layer groups from input to output. A parameter belongs to the group that names its module.
GROUPS = __GROUPS__

# Phases run in order. Groups named in "lr" train at that learning rate; all others are frozen.
PHASES = __PHASES__

BATCH_SIZE = __BATCH_SIZE__  # each batch is padded only to its own longest text
WEIGHT_DECAY = __WEIGHT_DECAY__  # AdamW; none on biases and norm layers
LABEL_SMOOTHING = __LABEL_SMOOTHING__
CLASS_WEIGHTS = __CLASS_WEIGHTS__  # per class, for imbalanced data; None: equal
PATIENCE = __PATIENCE__  # end a phase after this many epochs without a new best epoch (0: never)
SEED = __SEED__
FEATURE_CACHE = __FEATURE_CACHE__  # only the head trains: compute the pooled embeddings once
TRAIN_BN = False  # text encoders have no batch norm; their layer norms train with their group

# The best epoch: the lowest validation loss across all phases; a tie goes to higher accuracy.
# ------------------------------------------------------------------------------------------------


def decode(raw):
    """Bytes as the studio read them: UTF-8 (or UTF-16 with its BOM), else cp1252, else latin-1."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def table_texts(name, raw):
    """TEXT_COLUMN of a CSV, TSV or JSONL file (none if it has no such column)."""
    try:
        text = decode(raw)
    except UnicodeDecodeError:
        return []
    suffix = Path(name).suffix.lower()
    if suffix == ".jsonl":
        values = (row.get(TEXT_COLUMN) for row in json_rows(text) if isinstance(row, dict))
        return ["" if v is None else str(v) for v in values]
    delimiter = "\t" if suffix == ".tsv" else ","
    first = text.split("\n", 1)[0]
    if delimiter == "," and first.count(";") > first.count(","):
        delimiter = ";"  # what Excel writes where the decimal mark is a comma
    csv.field_size_limit(2**31 - 1)  # the default 128 KB refuses a long article
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(next(reader, []))]
    if TEXT_COLUMN not in header:
        return []
    i = header.index(TEXT_COLUMN)
    return [row[i] for row in reader if len(row) > i]


def json_rows(text):
    for line in text.split("\n"):  # not splitlines: U+2028 may sit inside a JSON string
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # blank, or not the run's: the count of missing texts will tell


def text_key(text):
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def junk(name):
    """Hidden files and folders, and what macOS and Windows add to zips and folders."""
    return any(
        part.startswith(".") or part in ("__MACOSX", "__pycache__", "Thumbs.db", "desktop.ini")
        for part in name.split("/")
    )


def data_files(path):
    """(name, read) for each file of DATA: a file, a folder or a .zip of either."""
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and not junk(info.filename):
                    yield info.filename, lambda info=info: zf.read(info)
    elif path.is_file():
        yield path.name, path.read_bytes
    else:
        for f in sorted(path.rglob("*")):
            if f.is_file() and not junk(f.relative_to(path).as_posix()):
                yield f.name, f.read_bytes


def read_data(data):
    """The run's texts, found in DATA by their keys, per split."""
    path = Path(data)
    if not path.exists():
        raise SystemExit(f"{data} does not exist: pass the data the run used ({DATA_USED!r}).")
    found, tables = {}, 0
    for name, read in data_files(path):
        suffix = Path(name).suffix.lower()
        if TEXT_COLUMN is None and suffix == ".txt":
            try:
                texts = [decode(read())]
            except UnicodeDecodeError:
                continue  # not a text the studio read
        elif TEXT_COLUMN is not None and suffix in (".csv", ".tsv", ".jsonl"):
            texts = table_texts(name, read())
            tables += bool(texts)
        else:
            continue
        for text in texts:
            found.setdefault(text_key(text.strip()), text.strip())
    if TEXT_COLUMN is not None and not tables:
        raise SystemExit(f"{data} holds no CSV, TSV or JSONL file with a column {TEXT_COLUMN!r}.")
    rows = {split: [(found.get(k), label) for k, label in items] for split, items in SPLIT.items()}
    missing = sum(text is None for items in rows.values() for text, _ in items)
    if missing:
        total = sum(len(items) for items in rows.values())
        raise SystemExit(
            f"{missing} of the run's {total} texts are not in {data}. Pass the data the run used "
            f"({DATA_USED!r}): a text changed in any way, even one character, is another text."
        )
    return rows


class Batches:
    """Tokenizes a batch at a time: padded to its own longest text, cut at MAX_LENGTH."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows):
        enc = self.tokenizer(
            [t for t, _ in rows], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        return batch, torch.tensor([y for _, y in rows])


def data_loader(model, data, split, training):
    """``split``'s texts, shuffled for training, tokenized by the model's own tokenizer."""
    return batches(data[split], training, collate_fn=Batches(model.tokenizer))


class TextClassifier(nn.Module):
    """The studio's text model: the encoder, pooled, then dropout and a linear head."""

    def __init__(self, encoder, tokenizer, num_classes):
        super().__init__()
        self.encoder, self.tokenizer = encoder, tokenizer
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward_features(self, batch):
        mask = batch["attention_mask"]
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        if POOLING == "cls":
            return out[:, 0]
        weights = mask.unsqueeze(-1).to(out.dtype)
        return (out * weights).sum(1) / weights.sum(1).clamp(min=1)

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, batch):
        return self.forward_head(self.forward_features(batch))


def encoder_folder(path):
    """--weights, else the bundled package's folder (as the run did), else the hub's id: its
    cache first, at the revision the run used."""
    if path:
        return path
    if BUNDLED_PACKAGE and WEIGHTS in ("bundled", "none") and importlib.util.find_spec(BUNDLED_PACKAGE):
        folder = Path(importlib.util.find_spec(BUNDLED_PACKAGE).origin).parent / "model"
        if (folder / "config.json").is_file():
            return folder
    if HUB_NAME:
        if BUNDLED_PACKAGE and WEIGHTS == "bundled":
            print(f"{BUNDLED_PACKAGE} is not installed: loading {HUB_NAME} from the Hugging Face hub")
        return HUB_NAME
    raise SystemExit(
        "pass --weights FOLDER: the encoder's Hugging Face folder (config.json, tokenizer, weights)"
    )


def load_encoder(folder, kw):
    """The encoder without its pooler (the classifier pools for itself): its weights, or only
    its architecture when the run started from random weights."""

    def load(**extra):
        if WEIGHTS == "none":
            return AutoModel.from_config(AutoConfig.from_pretrained(folder, **kw), **extra)
        return AutoModel.from_pretrained(folder, **kw, **extra)

    try:
        return load(add_pooling_layer=False)
    except TypeError:  # DistilBERT has no pooler to leave out
        return load()


def build_model(path):
    folder = encoder_folder(path)
    kw = {"revision": HUB_REVISION} if folder == HUB_NAME and HUB_REVISION else {}
    logging.set_verbosity_error()  # transformers reports the pooler it leaves out
    logging.disable_progress_bar()
    try:
        encoder, tokenizer = load_encoder(folder, kw), AutoTokenizer.from_pretrained(folder, **kw)
    except OSError as exc:  # no such folder, no weights in it (a bundle's encoder/ has none), offline
        raise SystemExit(f"could not load the encoder from {folder}: {exc}") from exc
    model = TextClassifier(encoder, tokenizer, len(CLASSES))
    nn.init.normal_(model.head.weight, std=0.01)  # near zero: first predictions are uniform
    nn.init.zeros_(model.head.bias)
    return model


def to_device(x, device):
    """A tokenized batch (a dict of tensors) or cached features, on ``device``."""
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)
