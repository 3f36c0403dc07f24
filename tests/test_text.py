"""Texts through the same engine: parsing and its bad inputs, the text backbones' layer groups,
feature extraction and fine-tuning on a generated corpus, the TF-IDF baseline, and predict."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tl_core.data import modality_of, scan_dataset
from tl_core.errors import ConfigError, DatasetError

WORDS = {
    "sport": [
        "goal",
        "match",
        "striker",
        "league",
        "coach",
        "season",
        "keeper",
        "referee",
        "stadium",
        "penalty",
    ],
    "money": [
        "shares",
        "bank",
        "profit",
        "market",
        "investors",
        "rates",
        "inflation",
        "earnings",
        "stock",
        "budget",
    ],
    "music": ["album", "band", "guitar", "concert", "singer", "chart", "song", "tour", "drummer", "lyrics"],
}
FILLER = ["the", "a", "of", "and", "in", "on", "with", "after", "before", "today", "yesterday", "new", "big"]


def sentences(n_per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts whose class shows in its keywords: learnable, like topic labels."""
    rng = random.Random(seed)
    rows = []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            picked = rng.sample(words, 3) + rng.sample(FILLER, 4)
            rng.shuffle(picked)
            rows.append((" ".join(picked).capitalize() + ".", label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("review", "stars")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"TL_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "tl_core.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


# -- data -------------------------------------------------------------------------------------


def test_csv_columns_are_guessed_and_split_stratified(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentences(20))
    ds = scan_dataset(data, seed=0)
    p = ds.profile
    assert p.modality == "text" and p.columns == ["review", "stars"] and p.encoding == "utf-8"
    assert p.classes == ["money", "music", "sport"]
    assert all(p.counts["val"][c] == 4 and p.counts["train"][c] == 16 for c in p.classes)
    text, label = ds.items["train"][0]
    assert text.endswith(".") and p.classes[label] in WORDS
    assert modality_of(data) == "text" and modality_of("digits") == "image"
    # The same seed gives the same split; TSV and JSONL read the same rows.
    assert scan_dataset(data, seed=0).items == ds.items
    tsv = tmp_path / "reviews.tsv"
    tsv.write_text("text\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in sentences(20)), encoding="utf-8")
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"text": t, "label": y}) for t, y in sentences(20)), encoding="utf-8"
    )
    for other in (tsv, jsonl):
        assert scan_dataset(other, seed=0).items == ds.items


def test_named_columns_a_split_column_and_a_zip(tmp_path: Path) -> None:
    rows = sentences(10)
    path = tmp_path / "t.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "body", "topic", "split"])
        for i, (t, y) in enumerate(rows):
            w.writerow([i, t, y, "test" if i % 10 == 0 else "val" if i % 5 == 0 else "train"])
    ds = scan_dataset(path, text_column="body", label_column="topic")
    assert ds.profile.columns == ["body", "topic"]
    assert {s: sum(c.values()) for s, c in ds.profile.counts.items()} == {"train": 24, "val": 3, "test": 3}
    with pytest.raises(DatasetError, match="no column 'words'.*id, body, topic, split"):
        scan_dataset(path, text_column="words", label_column="topic")
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "data/t.csv")
    assert scan_dataset(archive, text_column="body", label_column="topic").items == ds.items


def test_txt_folders_and_an_encoding_fallback(tmp_path: Path) -> None:
    for i, (text, label) in enumerate(sentences(6)):
        folder = tmp_path / "corpus" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "corpus" / "money" / "old.txt").write_bytes("Caf\xe9 prices rose by \xa35".encode("cp1252"))
    (tmp_path / "corpus" / "music" / "blank.txt").write_text("   \n", encoding="utf-8")
    ds = scan_dataset(tmp_path / "corpus")
    assert ds.profile.layout == "folders" and ds.profile.encoding == "utf-8; 1 file(s) as cp1252"
    assert any(t == "Café prices rose by £5" for s in ds.items.values() for t, _ in s)
    assert [(s.path, s.reason) for s in ds.profile.skipped] == [("music/blank.txt", "empty text")]
    utf16 = tmp_path / "excel.csv"  # Excel's "Unicode text" is UTF-16 with a byte-order mark
    utf16.write_bytes(("text,label\n" + "".join(f"{t},{y}\n" for t, y in sentences(4))).encode("utf-16"))
    table = scan_dataset(utf16)
    assert table.profile.encoding == "utf-16" and table.profile.n_train + table.profile.n_val == 12


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('text,label\n"an open quote,sport\n', r"line \d+: .*quote"),
        ("text,label\nfine,sport\nthree,fields,here\n", "line 3: 3 fields where the header has 2"),
        ("text,label\n" + "".join(f"t{i},only\n" for i in range(5)), "only one label"),
        ("text,label\n", "No usable texts"),
        ("words\nhello\n", "1 usable column"),
    ],
)
def test_bad_tables_say_what_and_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        scan_dataset(path)


def test_bad_json_line_and_skipped_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        scan_dataset(bad)
    rows = sentences(5) + [("   ", "sport"), ("no label here", "")]
    ds = scan_dataset(write_csv(tmp_path / "t.csv", rows))
    assert sorted(s.reason for s in ds.profile.skipped) == ["empty text", "no label"]
    assert "line 17" in ds.profile.skipped[0].path


def test_copies_split_together_and_given_splits_lose_their_leaks(tmp_path: Path) -> None:
    rows = sentences(10) + sentences(10)  # every text twice
    ds = scan_dataset(write_csv(tmp_path / "t.csv", rows))
    train = {t for t, _ in ds.items["train"]}
    assert not any(t in train for t, _ in ds.items["val"]) and len(ds.items["val"]) == 12
    assert sum(len(v) for v in ds.items.values()) == 60  # nothing lost
    assert any("30 text(s) are copies" in w for w in ds.profile.warnings)
    # A split column the user gave is kept, but validation copies of training texts leave it.
    given = [(t, y, "val" if i % 5 == 0 else "train") for i, (t, y) in enumerate(sentences(10))]
    leak = [(t, y, "train") for t, y, split in given if split == "val"][:2]
    path = tmp_path / "s.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label", "split"), *given, *leak])
    ds = scan_dataset(path)
    assert len(ds.items["val"]) == 4
    assert any("2 val text(s) also appear in training" in w for w in ds.profile.warnings)


def test_imbalance_is_reported_in_texts(tmp_path: Path) -> None:
    rows = sentences(40)[:40] + sentences(5, seed=1)[5:10] + sentences(5, seed=1)[10:15]
    ds = scan_dataset(write_csv(tmp_path / "t.csv", rows))
    assert any("training texts" in w and "imbalanced" in w for w in ds.profile.warnings)


def test_bbc_news_sample_is_offline_and_credited() -> None:
    from tl_core.samples import SAMPLES

    ds = scan_dataset("bbc-news")
    assert ds.profile.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert ds.profile.n_train + ds.profile.n_val == 2225
    assert any("are copies of another" in w for w in ds.profile.warnings)  # the corpus repeats some
    assert "cp1252" in (ds.profile.encoding or "")
    assert "BBC" in SAMPLES["bbc-news"].credit


# -- models -----------------------------------------------------------------------------------


def test_minilm_layer_groups_and_freeze_map() -> None:
    """The bundled MiniLM: embeddings, six encoder layers, the new head; the freeze map counts."""
    from tl_core.backbones import create_backbone
    from tl_core.freezing import layer_groups, report, set_trainable

    model, info = create_backbone("all-minilm-l6-v2", 3)
    assert info.weights == "bundled" and info.data_config["max_length"] == 128
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["embeddings"] + [f"layer {i}" for i in range(1, 7)] + ["head"]
    set_trainable(model, groups, ["layer 6", "head"])
    rows = {r.name: r for r in report(model, groups)}
    assert rows["head"].total == rows["head"].trainable == 384 * 3 + 3
    assert rows["layer 6"].trainable == rows["layer 1"].total == 1_774_464 and rows["layer 1"].frozen
    assert rows["embeddings"].frozen and rows["embeddings"].total == 11_918_592
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 1_774_464 + 1_155


def test_over_length_texts_are_counted_before_training() -> None:
    from tl_core.text_models import over_length

    long = " ".join(["word"] * 300)
    assert over_length("all-minilm-l6-v2", ["a short text", long, long]) == (2, 128)
    assert over_length("bert-base-uncased", ["x"]) is None  # not on this machine: nothing to count with


def test_dynamic_padding_and_truncation() -> None:
    from tl_core.text_models import TextBatches, create_text_backbone, load_tokenizer

    _, data_config, _ = create_text_backbone("test_bert", 2)
    batches = TextBatches(load_tokenizer(data_config), max_length=8)
    x, y = batches([("short one", 0), ("a little longer text than that", 1)])
    assert x["input_ids"].shape == (2, 8) and x["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    x, _ = batches([("short one", 0), ("tiny", 1)])
    assert x["input_ids"].shape == (2, 4)  # padded to this batch's longest, not the maximum
    assert y.tolist() == [0, 1]
    assert batches.truncated(["short", "one two three four five six seven eight nine"]) == 1


def text_trainer(data: Path, **kw: object):
    from tl_core.backbones import create_backbone
    from tl_core.config import TrainConfig
    from tl_core.devices import detect_device
    from tl_core.freezing import layer_groups
    from tl_core.training import Trainer, seed_everything

    cfg = TrainConfig(
        **({"data": str(data), "backbone": "test_bert", "weights": "none", "batch_size": 8} | kw)
    )
    seed_everything(cfg.seed)
    ds = scan_dataset(data, seed=cfg.seed)
    model, info = create_backbone("test_bert", len(ds.classes), "none")
    return Trainer(model, layer_groups(model), cfg, ds, info.data_config, detect_device("cpu"))


def test_feature_extraction_on_texts_learns_and_leaves_the_encoder(tmp_path: Path) -> None:
    trainer = text_trainer(write_csv(tmp_path / "t.csv", sentences(30)), epochs=30, lr=1e-2)
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    result = trainer.fit()
    assert result.inputs == "features" and result.epochs_run == 30
    assert result.best_val_acc >= 0.8  # keywords show through even random token embeddings
    assert all(torch.equal(before[k], v) for k, v in trainer.model.encoder.state_dict().items())
    probs = trainer.predict("val")
    assert probs.shape == (len(trainer.dataset.items["val"]), 3)


def test_fine_tune_top_trains_only_the_top_layer_and_head(tmp_path: Path) -> None:
    trainer = text_trainer(
        write_csv(tmp_path / "t.csv", sentences(10)), strategy="fine-tune-top", epochs=2, unfreeze_top=1
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    assert result.inputs == "texts" and result.epochs_run == 2
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in trainer.model.state_dict().items()
               if not torch.equal(before[k], v)}  # fmt: skip
    assert changed == {"encoder.encoder", "head.weight", "head.bias"}
    assert not any(
        not torch.equal(before[k], v)
        for k, v in trainer.model.state_dict().items()
        if k.startswith("encoder.encoder.layer.0.") or k.startswith("encoder.embeddings.")
    )


def test_modality_mismatch_says_which_backbone() -> None:
    from tl_core.runner import check_modality

    with pytest.raises(ConfigError, match="This data is text.*all-minilm-l6-v2"):
        check_modality("text", "efficientnet_lite0")
    with pytest.raises(ConfigError, match="This data is images"):
        check_modality("image", "all-minilm-l6-v2")
    check_modality("text", "test_bert")


def test_tfidf_baseline_on_keywords() -> None:
    from tl_core.text_baseline import tfidf_baseline

    rows = sentences(30)
    index = {label: i for i, label in enumerate(WORDS)}
    items = [(t, index[y]) for t, y in rows]
    random.Random(0).shuffle(items)
    result = tfidf_baseline(items[:70], items[70:])
    assert result.accuracy >= 0.9 and result.vocabulary > 10


# -- the CLI ----------------------------------------------------------------------------------


def test_train_a_csv_then_predict_texts(tmp_path: Path) -> None:
    """``predict --text`` rebuilds the run's model and tokenizer: it answers exactly what the run
    answered for its own validation texts."""
    from tl_core.evaluation import load_predictions
    from tl_core.runs import Run

    data = write_csv(tmp_path / "reviews.csv", sentences(30))
    out = cli("train", str(data), "--backbone", "test_bert", "--weights", "none", "--epochs", "3",
              "--pooling", "cls", "--json", home=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["baseline_acc"] >= 0.9 and summary["truncated"] == 0
    assert "TF-IDF baseline" in out.stderr
    assert Run(summary["run_dir"]).data_config()["pooling"] == "cls"  # and predict pools the same way
    val = load_predictions(Run(summary["run_dir"]))
    assert val is not None
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{val['path'][1]}\n{val['path'][2]}\n", encoding="utf-8")
    pred = cli("predict", summary["run_id"], "--text", val["path"][0], "--text-file", str(texts), "--json",
               home=tmp_path)  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    rows = json.loads(pred.stdout.strip().splitlines()[-1])
    assert [r["text"] for r in rows] == list(val["path"][:3])
    assert [r["top_k"][0]["label"] for r in rows] == list(val["predicted"][:3])
    assert [r["top_k"][0]["prob"] for r in rows] == pytest.approx(list(val["confidence"][:3]), abs=1e-4)
    both = cli("predict", summary["run_id"], "x.png", "--text", "hi", home=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr


def test_train_text_with_an_image_backbone_exits_2(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentences(5))
    out = cli("train", str(data), "--backbone", "resnet18", "--weights", "none", home=tmp_path)
    assert out.returncode == 2 and "This data is text" in out.stderr


# -- the wizard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_class", "similarity", "task", "gpu", "strategy", "because"),
    [
        (100, "very-similar", "standard", False, "feature-extraction", "Under 500 texts"),
        (300, "very-different", "fine-grained", True, "fine-tune-top", "Capped at the top 20%"),
        (800, "very-similar", "standard", False, "fine-tune-top", "500-2,000 texts"),
        (800, "very-similar", "simple", True, "feature-extraction", "the words give them away"),
        (3_000, "very-similar", "standard", True, "gradual", "top half"),
        (3_000, "very-similar", "standard", False, "fine-tune-top", "No GPU detected"),
        (20_000, "moderate", "standard", True, "fine-tune-all", "whole encoder"),
    ],
)
def test_wizard_rules_for_text(
    per_class: int, similarity: str, task: str, gpu: bool, strategy: str, because: str
) -> None:
    from tl_core.advisor import WizardAnswers, apply_recommendation, recommend
    from tl_core.config import TrainConfig

    rec = recommend(WizardAnswers(per_class, 3, similarity, task, has_gpu=gpu, modality="text"))
    assert rec.strategy == strategy and rec.augment == "none"
    assert any("augment" in w for w in rec.why)
    if strategy != "feature-extraction":  # the BERT recipe: 2e-5 to 5e-5, 2-4 epochs, warm-up
        assert rec.top_lr == 5e-5 and rec.deep_lr == 2e-5 and 2 <= rec.epochs <= 4
        assert any("warm-up" in w for w in rec.why)
        body = ["embeddings"] + [f"layer {i}" for i in range(1, 7)]
        cfg = apply_recommendation(rec, TrainConfig(backbone="all-minilm-l6-v2"), body)
        assert cfg.lr * cfg.backbone_lr_scale == pytest.approx(5e-5)
        if len(cfg.unfreeze or []) > 1:
            deepest = cfg.lr * cfg.backbone_lr_scale * cfg.lr_decay ** (len(cfg.unfreeze) - 1)
            assert deepest == pytest.approx(2e-5)
    assert any(because in w for w in rec.why), rec.why


def test_wizard_starts_text_data_from_text_answers(tmp_path: Path) -> None:
    from tl_core.advisor import SIMILARITY, similarity_choices, wizard_defaults

    ds = scan_dataset(write_csv(tmp_path / "t.csv", sentences(10)))
    guess = wizard_defaults(ds.profile)
    assert guess.guessed and "Everyday written English" in guess.note
    assert similarity_choices("text").keys() == SIMILARITY.keys()
    assert "news" in similarity_choices("text")["very-similar"]
    sample = wizard_defaults(scan_dataset("bbc-news").profile)
    assert not sample.guessed and sample.task == "simple"


# -- jobs and the app -------------------------------------------------------------------------


def test_lr_range_test_and_a_fine_tune_job_on_texts(tmp_path: Path) -> None:
    """The same jobs as for images: an LR range test on the encoder's top layer, then training
    with the run's extras (the baseline, the truncation count)."""
    from tl_core.config import TrainConfig
    from tl_core.jobs import JobManager
    from tl_core.lr_finder import load_result

    data = write_csv(tmp_path / "t.csv", sentences(12))
    manager = JobManager(tmp_path / "runs", executor="thread")
    cfg = TrainConfig(data=str(data), backbone="test_bert", weights="none", strategy="fine-tune-top",
                      unfreeze_top=1, epochs=2, batch_size=8)  # fmt: skip
    snap = manager.wait(manager.submit(cfg, kind="lr-find"), timeout=120)
    assert snap.status == "completed", snap.error
    result = load_result(snap.run_dir)
    assert result is not None and len(result.curve.lrs) > 0 and "layer 2" in result.lr_ratios
    snap = manager.wait(manager.submit(cfg), timeout=120)
    assert snap.status == "completed", snap.error
    assert snap.result["inputs"] == "texts" and snap.result["baseline_acc"] is not None
    assert snap.result["truncated"] == 0


def test_a_text_scan_travels_whole_to_another_machine(tmp_path: Path) -> None:
    """On a Ray node the app's scan is the data: no files to ship or to find on a shared path."""
    import threading

    from tl_core.config import TrainConfig
    from tl_core.runner import JobSpec, Reporter, _dataset

    ds = scan_dataset(write_csv(tmp_path / "t.csv", sentences(5)))
    cfg = TrainConfig(data="/nowhere/t.csv", backbone="test_bert")
    spec = JobSpec("j", cfg.to_dict(), str(tmp_path / "run"), "cpu", dataset=ds.to_dict())
    got, recorded = _dataset(spec, cfg, Reporter(lambda event: None, threading.Event()))
    assert got.items == recorded.items == ds.items and got.profile.modality == "text"


def test_lessons_offer_texts_only_what_applies() -> None:
    from tl_core.experiments import EXPERIMENTS, offered

    assert offered("image") == list(EXPERIMENTS)
    assert offered("text") == ["pretraining"]  # the forgetting meter probes with ImageNet photos


# -- what the review of the first version found ---------------------------------------------


def test_a_table_beside_class_folders_is_an_image_datasets_side_file(tmp_path: Path) -> None:
    from conftest import make_class_folders

    root = make_class_folders(tmp_path / "pets", {"red": 4, "blue": 4})
    (root / "labels.csv").write_text("file,label\nred/0.png,red\n", encoding="utf-8")
    assert modality_of(root) == "image" and scan_dataset(root).profile.modality == "image"


def test_awkward_tables_still_read(tmp_path: Path) -> None:
    rows = sentences(4)
    long = tmp_path / "long.csv"  # one article far over csv's default 128 KB field limit
    write_csv(long, [("word " * 40_000, "sport"), *rows])
    assert max(len(t) for s in scan_dataset(long).items.values() for t, _ in s) > 150_000
    semi = tmp_path / "excel.csv"  # Excel where the decimal mark is a comma
    semi.write_text("text;label\n" + "".join(f"{t};{y}\n" for t, y in rows), encoding="utf-8")
    assert scan_dataset(semi).profile.columns == ["text", "label"]
    sep = tmp_path / "sep.jsonl"  # U+2028 is legal inside a JSON string
    sep.write_text(
        "\n".join(json.dumps({"text": t + "\u2028more", "label": y}, ensure_ascii=False) for t, y in rows)
    )
    assert scan_dataset(sep).profile.n_train + scan_dataset(sep).profile.n_val == 12
    marked = tmp_path / "marked.csv"  # only the test rows are marked
    with marked.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [("text", "label", "split")]
            + [(t, y, "test" if i % 4 == 0 else "") for i, (t, y) in enumerate(sentences(8))]
        )
    counts = {s: sum(c.values()) for s, c in scan_dataset(marked).profile.counts.items()}
    assert counts["test"] == 6 and counts["train"] + counts["val"] == 18


def test_the_longest_named_column_is_the_text() -> None:
    from tl_core.text_data import Table, guess_columns

    rows = [{"Class Index": str(i % 4), "Title": f"Title {i}", "Description": "a much longer description " * 5}
            for i in range(20)]  # fmt: skip
    assert guess_columns(Table(["Class Index", "Title", "Description"], rows, "utf-8", [])) == (
        "Description",
        "Class Index",
    )


def test_given_splits_lose_val_and_test_leaks() -> None:
    from tl_core.text_data import leave_out_leaks

    items = {"train": [("a", 0)], "val": [("a", 0), ("b", 1)], "test": [("b", 1), ("c", 0)]}
    warnings = leave_out_leaks(items)
    assert items == {"train": [("a", 0)], "val": [("b", 1)], "test": [("c", 0)]} and len(warnings) == 2


def test_the_baseline_copes_with_texts_without_words() -> None:
    from tl_core.text_baseline import tfidf_baseline

    for a, b in (("a", "b"), ("😀", "😡"), ("我爱北京天安门", "今天天气很好")):
        result = tfidf_baseline([(a, 0), (b, 1)] * 30, [(a, 0), (b, 1)])
        assert result is not None and result.accuracy == 1.0


def test_a_moved_encoder_folder_is_found_again() -> None:
    from tl_core.errors import WeightsUnavailable
    from tl_core.text_models import encoder_folder

    moved = {"tokenizer": "/gone/away", "encoder": "all-minilm-l6-v2"}
    assert (encoder_folder(moved) / "tokenizer.json").is_file()
    with pytest.raises(WeightsUnavailable, match="prefetch bert-base-uncased"):
        encoder_folder({"tokenizer": "/gone/away", "encoder": "bert-base-uncased"})


def test_pooling_stays_with_text_backbones(tmp_path: Path) -> None:
    from tl_core.config import TrainConfig
    from tl_core.experiments import pretraining_runs

    cfg = TrainConfig(backbone="all-minilm-l6-v2", model_kwargs={"pooling": "cls"}, text_column="body")
    assert cfg.for_modality("image").model_kwargs == {}
    assert all(c.text_column == "body" for _, c in pretraining_runs(cfg))  # lessons keep the columns
    out = cli("train", "digits", "--pooling", "cls", "--epochs", "1", home=tmp_path)
    assert out.returncode == 2 and "Pooling is a text encoder's setting" in out.stderr


def test_bundles_zipped_unzipped_and_onnx_answer_as_the_run(tmp_path: Path) -> None:
    from tl_core.errors import TLError
    from tl_core.export import write_bundle
    from tl_core.jobs import JobManager
    from tl_core.model_export import export_run, parity_text
    from tl_core.predictors import load_predictor, predict_files, predict_texts
    from tl_core.runs import Run

    manager = JobManager(tmp_path / "runs", executor="thread")
    cfg = tiny_text_config(write_csv(tmp_path / "t.csv", sentences(8)))
    snap = manager.wait(manager.submit(cfg), timeout=120)
    assert snap.status == "completed", snap.error
    bundle = write_bundle(Run(snap.run_dir), tmp_path / "b.zip")
    with zipfile.ZipFile(bundle) as zf:
        assert {"predict.py", "train.py", "encoder/tokenizer.json"} <= set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    onnx_file = export_run(Run(snap.run_dir), "onnx", tmp_path / "m.onnx")
    assert onnx_file.parity is not None and onnx_file.parity.top1_agreement == 1.0
    assert "validation texts" in parity_text(onnx_file.parity)
    texts = ["goal match", "bank profit and shares in a much longer text than the other"]
    targets = (snap.run_dir, bundle, tmp_path / "unzipped", tmp_path / "m.onnx")
    answers = [predict_texts(load_predictor(t), texts) for t in targets]
    assert answers[0] == answers[1] == answers[2]
    for onnx_row, run_row in zip(answers[3], answers[0], strict=True):  # onnxruntime: rounding only
        assert [t["label"] for t in onnx_row["top_k"]] == [t["label"] for t in run_row["top_k"]]
        assert [t["prob"] for t in onnx_row["top_k"]] == pytest.approx(
            [t["prob"] for t in run_row["top_k"]], abs=1e-5
        )
    with pytest.raises(TLError, match="for image models"):
        export_run(Run(snap.run_dir), "torchscript", tmp_path / "m.pt")
    with pytest.raises(TLError, match="classifies texts"):
        predict_files(load_predictor(bundle), ["x.png"])


def tiny_text_config(data: Path, **kw: object):
    from tl_core.config import TrainConfig

    return TrainConfig(
        **({"data": str(data), "backbone": "test_bert", "weights": "none", "epochs": 2, "batch_size": 8} | kw)
    )
