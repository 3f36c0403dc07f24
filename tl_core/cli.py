"""``tl-studio``: the same engine as the app, from a terminal.

User errors (bad path, unknown backbone, unusable data, unavailable weights) print one line
and exit 2; with ``--json`` the last stdout line of ``train`` is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import TLError
from .runs import Run, RunStatus

EXIT_USER_ERROR = 2


_TRAIN_FLAGS = (
    "backbone",
    "strategy",
    "weights",
    "epochs",
    "image_size",
    "batch_size",
    "lr",
    "augment",
    "unfreeze_top",
    "patience",
    "label_smoothing",
    "train_bn",
    "device",
    "seed",
    "test_fraction",
    "text_column",
    "label_column",
)
"""``train`` flags named as the ``TrainConfig`` fields they set. They default to None (not
given), so a ``--config`` file's values stand unless a flag is typed; the help states the
``TrainConfig`` default that applies without a file."""


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .config import AUGMENT_PRESETS, TrainConfig
    from .strategies import list_strategies

    d = TrainConfig()
    p = sub.add_parser("train", help="train a classifier on a folder, a .zip or a built-in sample")
    p.add_argument(
        "data",
        nargs="?",
        help="folder of class folders (or train/ + val/) of images or .txt files, a .csv/.tsv/.jsonl of "
        "texts, a .zip, or a sample ('digits', 'bbc-news'); replaces the one in --config",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="a run's config.json (in every export): its settings are the defaults, flags given here win",
    )
    p.add_argument(
        "--backbone", help=f"see `tl-studio backbones` (default {d.backbone}; for texts all-minilm-l6-v2)"
    )
    p.add_argument(
        "--strategy",
        choices=[s.name for s in list_strategies()],
        help="how much of the backbone retrains, from least to most; epochs and LR default per "
        f"strategy (default {d.strategy})",
    )
    p.add_argument("--epochs", type=int, help="default depends on the strategy")
    p.add_argument("--image-size", type=int, help="input size in px (default: the backbone's)")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, help="head learning rate (default depends on the strategy)")
    p.add_argument("--weights", help=f"auto, bundled, hub, none or file:PATH (default {d.weights})")
    p.add_argument("--augment", choices=list(AUGMENT_PRESETS), help=f"default {d.augment}")
    p.add_argument(
        "--unfreeze-top", type=int, help=f"groups unfrozen by fine-tune-top (default {d.unfreeze_top})"
    )
    p.add_argument(
        "--patience", type=int, help=f"early-stopping patience in epochs (default {d.patience}; 0: off)"
    )
    p.add_argument("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
    p.add_argument(
        "--train-bn",
        action=argparse.BooleanOptionalAction,
        help="keep BatchNorm trainable in frozen layers (default: frozen)",
    )
    p.add_argument("--device", help=f"auto, cuda, mps or cpu (default {d.device})")
    p.add_argument("--runs-dir", help="where run folders go (default $TL_STUDIO_HOME/runs)")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument(
        "--test-fraction",
        type=float,
        help="hold out this share of each class as a test split, scored once at the end (no test/ folder; "
        f"default {d.test_fraction:g})",
    )
    p.add_argument(
        "--text-column", help="texts in a CSV/TSV/JSONL: the column holding them (default: guessed)"
    )
    p.add_argument(
        "--label-column", help="texts in a CSV/TSV/JSONL: the column holding labels (default: guessed)"
    )
    p.add_argument(
        "--pooling",
        choices=["mean", "cls"],
        help="texts: how word pieces become one vector (default: the encoder's)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    _add_executor(p)


def _add_executor(p: argparse.ArgumentParser) -> None:
    """Where jobs run: this machine, or a Ray cluster (the same flags for ``train`` and ``app``)."""
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="local (this machine) or ray (a Ray cluster; pip install -e '.[cluster]'); TL_STUDIO_EXECUTOR",
    )
    p.add_argument(
        "--ray-address",
        help="the Ray cluster, e.g. 10.0.0.5:6379 (default: start a local Ray); TL_STUDIO_RAY_ADDRESS",
    )
    p.add_argument(
        "--ray-cpus", type=int, help="CPUs a job asks for on a cluster without GPUs (2); TL_STUDIO_RAY_CPUS"
    )


def _settings(args: argparse.Namespace) -> Any:
    """The environment's settings, with the command line's executor flags on top."""
    import dataclasses

    from .settings import StudioSettings

    settings = StudioSettings.from_env()
    flags = {
        "executor": "ray" if args.ray_address and not args.executor else args.executor,
        "ray_address": args.ray_address,
        "ray_cpus_per_job": args.ray_cpus,
    }
    return dataclasses.replace(settings, **{k: v for k, v in flags.items() if v is not None})


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-studio",
        description="Transfer Learning Studio: train image classifiers by transfer learning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("backbones", help="list the backbone catalog and what works offline")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("datasets", help="list the built-in sample datasets")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("runs", help="list saved runs")
    p.add_argument("--runs-dir")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("predict", help="classify images (or texts) with a finished run's best model")
    p.add_argument(
        "run", help="a run id or folder, a bundle .zip, an .onnx or a TorchScript file", metavar="TARGET"
    )
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--text", action="append", help="a text to classify (repeat for more); text models")
    p.add_argument("--text-file", help="a UTF-8 file with one text per line; text models")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--runs-dir")
    p.add_argument("--json", action="store_true")
    from .model_export import FORMATS as EXPORT_FORMATS  # light: no torch until an export is built

    p = sub.add_parser(
        "export",
        help="write a run as a bundle, ONNX, TorchScript or a timm folder (checked against the model)",
    )
    p.add_argument("run", help="run id (see `tl-studio runs`) or run folder")
    p.add_argument("--format", default="bundle", choices=EXPORT_FORMATS)
    p.add_argument(
        "--out",
        help="file to write, a folder for timm (default here: <run id>-bundle.zip, .onnx, "
        ".torchscript.pt or -timm/)",
    )
    p.add_argument("--runs-dir")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "bench",
        help="the tutorials' plain PyTorch loop against the engine, same data, one process; or, with "
        "--throughput MODEL, the data path against synthetic tensors",
    )
    p.add_argument(
        "data", nargs="?", help="as for train: a folder, a .zip or 'digits' (--throughput: optional)"
    )
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="auto")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, help="default 32 (--throughput: 128 on a GPU, 16 on a CPU)")
    p.add_argument(
        "--throughput",
        metavar="MODEL",
        help="images/s of a fine-tune-all of MODEL (any timm name, e.g. resnet50) on the real data "
        "path and on synthetic tensors already on the device; without DATA, on generated photos",
    )
    p.add_argument("--device", default="auto", help="--throughput: auto, cuda or cpu")
    p.add_argument(
        "--augment-on",
        choices=["auto", "device", "cpu"],
        default="auto",
        help="--throughput: where the data path augments (auto: on a GPU, the device)",
    )
    from .bench import STRATEGIES

    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, of these")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on the last stdout line")
    p = sub.add_parser("prefetch", help="download hub weights into the cache before going offline")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = sub.add_parser("app", help="start the Streamlit app; further options go to `streamlit run`")
    p.add_argument(
        "--workshop",
        action="store_true",
        help="one server for a room: private workspaces, a fair queue, limits (TL_STUDIO_WORKSHOP=1)",
    )
    p.add_argument(
        "--devices",
        help="GPUs to train on, e.g. 0,2 (default: every visible GPU; TL_STUDIO_DEVICES)",
    )
    _add_executor(p)
    return parser


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _train(args: argparse.Namespace, started: float) -> int:
    from .jobs import JobManager, create_executor

    cfg = _train_config(args)
    manager = JobManager(args.runs_dir, executor=create_executor(_settings(args), local="thread"))
    try:
        return _follow(manager, manager.submit(cfg), args, started)
    finally:
        manager.shutdown()


def _train_config(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` to run: ``--config``'s settings (or the defaults), then every flag
    typed on the command line, then the positional data path."""
    import dataclasses

    from .config import DEFAULT_TEXT_BACKBONE, TrainConfig
    from .data import modality_of
    from .errors import ConfigError

    base = _read_config(args.config) if args.config else TrainConfig()
    given = {name: getattr(args, name) for name in _TRAIN_FLAGS if getattr(args, name) is not None}
    if "patience" in given:
        given["patience"] = given["patience"] or None  # 0: off
    if args.data is not None:
        # The config's label names its own data; another path gets labelled by its own name.
        given |= {"data": args.data, "data_label": base.data_label if args.data == base.data else ""}
    elif not args.config:
        raise ConfigError(
            "Give the data to train on (a folder, a .zip or 'digits'), or --config with a run's config.json."
        )
    if args.pooling:
        given["model_kwargs"] = {**base.model_kwargs, "pooling": args.pooling}
    if "backbone" not in given and not args.config and modality_of(given["data"]) == "text":
        given["backbone"] = DEFAULT_TEXT_BACKBONE
    # A new run from the terminal is not part of the experiment the config's run belonged to.
    return dataclasses.replace(base, group="", **given)


def _read_config(path: str) -> Any:
    """A JSON ``TrainConfig`` such as a run's ``config.json``; keys it doesn't know are ignored."""
    from .config import TrainConfig
    from .errors import ConfigError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Can't read the config file {path}: {exc.strerror or exc}.") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); pass a run's config.json.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no settings: it should be a JSON object, like a run's config.json.")
    return TrainConfig.from_dict(data)


def _follow(manager: Any, job_id: str, args: argparse.Namespace, started: float) -> int:
    """Show the job's progress until it ends, then its summary; Ctrl-C stops it cleanly."""
    from tqdm import tqdm

    bar = tqdm(
        total=1000,
        file=sys.stderr,
        leave=False,
        disable=None,  # a bar on a terminal; in logs only the per-epoch lines
        bar_format="{desc} |{bar}| {percentage:3.0f}% {postfix}",
        dynamic_ncols=True,
    )
    shown_epochs, last_stage = 0, ""
    try:
        while True:
            st = manager.wait(job_id, timeout=0.2)
            if (
                bar.disable
                and st.stage != last_stage
                and not st.finished
                and st.stage not in ("training", "starting")
            ):
                bar.write(f"{st.stage}...", file=sys.stderr)  # no live bar in a log: say what it's doing
            last_stage = st.stage
            bar.set_description_str(
                st.stage if st.stage != "training" else f"epoch {st.epoch}/{st.epochs_total}"
            )
            bar.n = int(st.progress * 1000)
            for row in st.history[shown_epochs:]:
                bar.write(
                    f"epoch {row['epoch']:>3} [{row['phase']}] train loss {row['train_loss']:.4f} "
                    f"acc {row['train_acc']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} "
                    f"| {row['seconds']:.1f}s",
                    file=sys.stderr,
                )
            shown_epochs = len(st.history)
            bar.set_postfix_str(f"ETA {_fmt_eta(st.eta_s)}")
            bar.refresh()
            if st.finished:
                break
    except KeyboardInterrupt:
        bar.write("Stopping after the current batch...", file=sys.stderr)
        manager.stop(job_id)
        st = manager.wait(job_id)
    finally:
        bar.close()
    if st.status == RunStatus.FAILED:
        print(f"tl-studio: error: {st.error}", file=sys.stderr)
        return EXIT_USER_ERROR if st.user_error else 1
    summary = _summary(manager, job_id, started)
    test = summary["test_acc"]
    print(
        f"{st.status}: val accuracy {summary['best_val_acc']:.2%} at epoch {summary['best_epoch']} (kept: "
        f"lowest val loss) of {summary['epochs_run']} in {summary['wall_s']:.1f}s{' on ' + st.node if st.node else ''}"
        + (f"; held-out test accuracy {test:.2%}" if test is not None else "")
        + (f"; TF-IDF baseline {summary['baseline_acc']:.2%}" if summary["baseline_acc"] is not None else "")
        + f"; weights in {summary['run_dir']}/{Run.WEIGHTS}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary))
    return 130 if st.status == RunStatus.STOPPED else 0


def _summary(manager: Any, job_id: str, started: float) -> dict[str, Any]:

    st = manager.snapshot(job_id)
    run = Run(st.run_dir)
    cfg = run.config_dict()
    profile = run.read_json(Run.DATASET, {})
    result = st.result or {}
    return {
        "run_id": st.run_id,
        "run_dir": st.run_dir,
        "status": st.status,
        "strategy": cfg.get("strategy"),
        "backbone": cfg.get("backbone"),
        "weights": info.weights_detail if (info := run.backbone()) else None,
        "image_size": cfg.get("image_size"),
        "best_val_acc": result.get("best_val_acc"),
        "best_epoch": result.get("best_epoch"),
        "test_acc": result.get("test_acc"),
        "epochs_run": result.get("epochs_run"),
        "wall_s": round(st.finished_at - st.submitted_at, 2) if st.finished_at else None,
        "process_s": round(time.perf_counter() - started, 2),
        "trainable_params": result.get("trainable_params"),
        "total_params": result.get("total_params"),
        "device": result.get("device") or st.device,
        "node": st.node or None,
        "feature_cache": result.get("feature_cache"),
        "baseline_acc": result.get("baseline_acc"),
        "truncated": result.get("truncated"),
        "dataset": {
            "classes": profile.get("classes"),
            "n_train": profile.get("n_train"),
            "n_val": profile.get("n_val"),
            "skipped": profile.get("skipped"),
            "warnings": profile.get("warnings"),
        },
    }


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _backbones(args: argparse.Namespace) -> int:
    from .backbones import list_backbones, weights_status
    from .text_models import TEXT_BACKBONES, text_weights_status

    rows = []
    for spec in list_backbones():
        offline = weights_status(spec)
        rows.append(
            spec.to_dict()
            | {"modality": "image", "offline": offline, "offline_ready": offline != "needs download"}
        )
    text_rows = []
    for tspec in TEXT_BACKBONES.values():
        offline = text_weights_status(tspec)
        text_rows.append(tspec.to_dict() | {"offline": offline, "offline_ready": offline != "needs download"})
    if args.json:
        print(json.dumps(rows + text_rows))
    else:
        print("Images:")
        print(_table(rows, ["name", "family", "params_m", "top1", "input_size", "offline", "best_for"]))
        print("\nTexts:")
        print(
            _table(text_rows, ["name", "family", "params_m", "layers", "max_length", "offline", "best_for"])
        )
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from .samples import list_samples

    rows = [
        {
            "name": s.name,
            "kind": s.modality,
            "classes": s.n_classes,
            "examples": s.n_images,
            "images": s.n_images if s.modality == "image" else 0,
            "offline": "yes",
            "description": s.description,
            "credit": s.credit,
        }
        for s in list_samples()
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        print(_table(rows, ["name", "kind", "classes", "examples", "offline", "description"]))
        for row in rows:
            if row["credit"]:
                print(f"\n{row['name']}: {row['credit']}")
        print(
            "\nOr pass your own folder of class folders (images, or one .txt per example), a train/ + "
            "val/ folder, a .csv/.tsv/.jsonl of texts, or a .zip of any of those."
        )
    return 0


def _runs(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .runs import RunStore

    runs = RunStore(args.runs_dir).list()
    if args.json:
        print(json.dumps([asdict(r) for r in runs]))
    elif not runs:
        print("No runs yet. Start one with: tl-studio train digits")
    else:
        rows = [
            asdict(r) | {"best_val_acc": f"{r.best_val_acc:.3f}" if r.best_val_acc is not None else "-"}
            for r in runs
        ]
        print(
            _table(rows, ["run_id", "status", "backbone", "strategy", "data", "best_val_acc", "epochs_run"])
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .predictors import load_predictor, predict_files, predict_texts

    texts = list(args.text or [])
    if args.text_file:
        try:
            texts += Path(args.text_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Can't read {args.text_file} as UTF-8 text: {exc}.") from exc
    if bool(texts) == bool(args.images):
        raise ConfigError("Give image files, or texts with --text / --text-file (not both).")
    predictor = load_predictor(args.run, args.runs_dir)
    if texts:
        results, key = predict_texts(predictor, texts, args.top_k), "text"
    else:
        results, key = predict_files(predictor, args.images, args.top_k), "image"
    for row in results:  # the unreadable ones, one line each; the others are still predicted
        if "error" in row:
            print(
                f"tl-studio: {row[key] if key == 'image' else repr(row[key][:60])}: {row['error']}",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(results))
    else:
        for row in results:
            if "top_k" in row:
                shown = row[key] if key == "image" else repr(row[key][:60])
                print(f"{shown}: " + ", ".join(f"{t['label']} {t['prob']:.1%}" for t in row["top_k"]))
    return 0 if any("top_k" in row for row in results) else EXIT_USER_ERROR


def _export(args: argparse.Namespace) -> int:
    from .model_export import describe, export_run
    from .runs import Run, RunStore

    run = Run(args.run) if Path(args.run).is_dir() else RunStore(args.runs_dir).get(args.run)
    result = export_run(run, args.format, args.out)
    print(json.dumps(result.to_dict()) if args.json else describe(result))
    return 0


def _prefetch(args: argparse.Namespace) -> int:
    from .backbones import prefetch

    for name in args.names:
        path = prefetch(name)
        print(f"{name}: {path}")
    return 0


def _app(args: argparse.Namespace) -> int:
    app = Path(__file__).resolve().parent.parent / "app.py"
    if not app.is_file():
        raise TLError(
            f"app.py not found next to tl_core ({app}); run from a source checkout (pip install -e .)."
        )
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), *args.streamlit_args]
    env = os.environ | ({"TL_STUDIO_WORKSHOP": "1"} if args.workshop else {})
    if args.devices:
        from .devices import visible_devices

        visible_devices(args.devices)  # a typo fails here, not after the server started
        env["TL_STUDIO_DEVICES"] = args.devices
    settings = _settings(args)
    if settings.executor == "ray":
        env |= {"TL_STUDIO_EXECUTOR": "ray", "TL_STUDIO_RAY_CPUS": str(settings.ray_cpus_per_job)}
        from .ray_executor import check_cluster

        check_cluster(settings.ray_address)  # no Ray, or no cluster there: one line now, not in the app
        if settings.ray_address:
            env["TL_STUDIO_RAY_ADDRESS"] = settings.ray_address
    # Become the server (no child left behind when a supervisor stops this process).
    os.chdir(app.parent)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def _bench(args: argparse.Namespace) -> int:
    from .backbones import BACKBONES
    from .bench import STRATEGIES, report, run_bench

    if args.throughput:
        from . import throughput

        on_device = {"auto": None, "device": True, "cpu": False}[args.augment_on]
        measured = throughput.measure(
            args.throughput, args.data, args.image_size, args.batch_size, args.device, "light", on_device
        )
        print(throughput.report(measured), file=sys.stderr)
        if args.json:
            print(json.dumps(measured.to_dict()))
        return 0
    if not args.data:
        raise TLError("bench needs DATA (a folder, a .zip or 'digits'), or --throughput MODEL.")

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown or not strategies:
        raise TLError(
            f"bench compares {' and '.join(STRATEGIES)}; not {', '.join(sorted(unknown)) or 'nothing'}."
        )
    result = run_bench(
        args.data,
        args.backbone,
        args.weights,
        args.image_size,
        args.epochs,
        args.batch_size or 32,
        strategies,
        catalog_only=args.backbone in BACKBONES,
    )
    print(report(result), file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.streamlit_args = extra
    handlers = {
        "train": lambda a: _train(a, started),
        "backbones": _backbones,
        "datasets": _datasets,
        "runs": _runs,
        "predict": _predict,
        "prefetch": _prefetch,
        "export": _export,
        "bench": _bench,
        "app": _app,
    }
    try:
        return handlers[args.command](args)
    except TLError as exc:
        print(f"tl-studio: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
