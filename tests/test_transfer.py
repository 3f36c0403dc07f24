"""Data out to a node and the run folder back, without a cluster: plain bytes and folders."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tl_core.data import Dataset, scan_dataset
from tl_core.errors import DatasetError
from tl_core.runner import JobSpec, run_job
from tl_core.transfer import (
    FolderChanges,
    cached_data,
    data_fingerprint,
    pack_dataset,
    unpack_data,
    write_files,
)


def test_a_dataset_travels_as_bytes_and_reads_the_same_from_the_copy(
    studio_home: Path, split_folders: Path, tmp_path: Path
) -> None:
    dataset = scan_dataset(split_folders)
    again = Dataset.from_dict(dataset.to_dict())  # as the node receives the app's scan
    assert again == dataset
    pack = pack_dataset(again)
    assert pack.nbytes == sum(os.path.getsize(p) for rows in dataset.items.values() for p, _ in rows)
    folder = unpack_data(pack, tmp_path / "cache")
    assert unpack_data(pack, tmp_path / "cache") == folder == cached_data(pack.key, tmp_path / "cache")
    copy = again.moved_to(folder)
    assert copy.profile == dataset.profile  # the record names the original...
    for split, rows in dataset.items.items():  # ...and the copy holds the same bytes
        for (orig, label), (moved, label2) in zip(rows, copy.items[split], strict=True):
            assert label == label2 and Path(moved).read_bytes() == Path(orig).read_bytes()
            assert Path(moved).is_relative_to(folder)


def test_the_fingerprint_changes_with_any_file(studio_home: Path, color_folders: Path) -> None:
    dataset = scan_dataset(color_folders)
    key, nbytes = data_fingerprint(dataset)
    assert nbytes > 0 and data_fingerprint(dataset) == (key, nbytes)
    path = Path(dataset.items["train"][0][0])
    path.write_bytes(path.read_bytes() + b"\0")
    assert data_fingerprint(dataset)[0] != key


def test_run_files_come_back_changed_only_and_status_last(tmp_path: Path) -> None:
    node = tmp_path / "node"
    write_files(node, {"config.json": b"{}", "status.json": b"{}"})
    changes = FolderChanges(node)
    assert set(changes.take()) == {"config.json"}  # status.json waits for the end
    (node / "metrics.jsonl").write_text("{}\n")
    (node / ".metrics.jsonl.tmp").write_text("half")  # an atomic write in flight is never sent
    assert set(changes.take()) == {"metrics.jsonl"}
    assert changes.take() == {}
    assert set(changes.take(final=True)) == {"status.json"}


@pytest.mark.parametrize("name", ["../escape.json", "/etc/passwd", ".hidden", "a/../../b", ""])
def test_files_from_a_node_cannot_land_outside_the_run(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError, match="not a plain relative file name"):
        write_files(tmp_path / "run", {name: b"x"})
    assert not (tmp_path / "escape.json").exists()


def test_a_node_that_cannot_see_the_shared_path_says_so(
    studio_home: Path, color_folders: Path, tmp_path: Path
):
    from conftest import tiny_config
    from tl_core.runs import RunStore

    dataset = scan_dataset(color_folders)
    gone = Dataset.from_dict(dataset.to_dict()).moved_to(tmp_path / "not-mounted")
    gone.profile.root = str(tmp_path / "not-mounted")
    cfg = tiny_config(color_folders, epochs=1).resolved()
    run = RunStore().create(cfg.to_dict())
    events: list[dict] = []
    spec = JobSpec("j", cfg.to_dict(), str(run.dir), "cpu", dataset=gone.to_dict(), lock_device=False)
    run_job(spec, events.append, threading.Event())
    done = events[-1]["fields"]
    assert done["status"] == "failed" and done["user_error"]
    assert "can't see the data at" in done["error"] and "same path on every node" in done["error"]


def test_a_nodes_data_cache_drops_the_least_recently_used(tmp_path: Path) -> None:
    from tl_core.transfer import DataPack, prune_data_cache

    cache = tmp_path / "cache"
    folders = [unpack_data(DataPack(f"k{i}", {"a/x.png": bytes(1000)}), cache) for i in range(3)]
    for i, folder in enumerate(folders):
        os.utime(folder, (1000 + i, 1000 + i))  # k0 oldest
    assert cached_data("k1", cache) == folders[1]  # reading it makes it the newest
    removed = prune_data_cache(keep=folders[2], cache=cache, max_bytes=2500)
    assert removed == [folders[0]] and folders[1].is_dir() and folders[2].is_dir()
