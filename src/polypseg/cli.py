"""The `polypseg` command: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from polypseg import __version__
from polypseg.detection import DEFAULT_MIN_AREA, DEFAULT_MIN_POLYP_AREA
from polypseg.errors import PolypsegError, out_of_memory


def _config_args(p: argparse.ArgumentParser) -> None:
    """Data and config options of the commands that train."""
    _data_args(p)
    p.add_argument("--config", help="YAML config file")
    p.add_argument(
        "--preset", choices=["fast", "full"], help="fast: CPU-friendly; full: GPU, width 32, 288x384"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. optim.lr=1e-3 (repeatable)",
    )
    p.add_argument("--cache-dir", help="decoded-data cache (default: ~/.cache/polypseg)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (defaults, --preset, --config, --set) as YAML and exit; "
        "a file to edit and pass back with --config",
    )


def _data_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument(
            "data",
            nargs="*",
            help="dataset folder(s) or name (default: $POLYPSEG_DATA/CVC-ClinicDB); "
            "several are checked as one combination",
        )
    else:
        p.add_argument(
            "--data",
            action="append",
            help="dataset folder or name (default: $POLYPSEG_DATA/CVC-ClinicDB); repeat to combine datasets, "
            "frames then named FOLDER/stem, each dataset keeping its own sequences",
        )
    p.add_argument("--images", help="explicit images folder (with --masks)")
    p.add_argument("--masks", help="explicit masks folder (with --images)")


CHECKPOINT_HELP = (
    "model (.pt, .safetensors, .onnx; or full/fast for the bundled models; default: full); repeat it, or "
    "name a finished `polypseg cv` folder, for an ensemble: the mean of the models' probabilities"
)
DEVICE_HELP = "auto | cpu | cuda | cuda:N (default auto: a GPU if there is one)"


def _model_args(p: argparse.ArgumentParser) -> None:
    """The model and how it is run, which `evaluate`, `predict` and `serve` share: a served model runs as
    it was evaluated."""
    p.add_argument("--checkpoint", action="append", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument("--threshold", type=float, help="probability threshold (default: the checkpoint's)")
    p.add_argument(
        "--mode",
        choices=["accurate", "fast"],
        help="default: the deepest head alone (L4), measured as good as or better than the mean; "
        "accurate: the mean of the heads (the UNet++ paper's mode); "
        "fast: the bundled fast model unless --checkpoint, and only head --prune's sub-network",
    )
    p.add_argument(
        "--prune", type=int, help="head 1..4 (1..depth; default: the deepest); 0 = the mean of the heads"
    )
    p.add_argument("--tta", action="store_true", help="average with flipped inputs")
    p.add_argument(
        "--min-area",
        default=DEFAULT_MIN_AREA,
        help="smallest predicted component counted as a polyp: a share of the frame (default "
        f"{DEFAULT_MIN_AREA.replace('%', '%%')}: 56 px at 384x288, 1037 px at 1920x1080) or pixels (50)",
    )
    p.add_argument(
        "--min-score",
        type=float,
        help="lowest peak probability of a component counted as a polyp (default: the checkpoint's, else 0: "
        "every component above --threshold); higher means fewer false alarms; evaluate's detection curve "
        "shows the trade",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _inference_args(p: argparse.ArgumentParser) -> None:
    """The options `evaluate` and `predict` share: the model's, and how many frames at once."""
    _model_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="frames through the network at once (default 8)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into an existing output folder")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog="polypseg", description="Find colorectal polyps in colonoscopy frames.")
    ap.add_argument("--version", action="version", version=f"polypseg {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    data = sub.add_parser(
        "data",
        help="check or download datasets",
        formatter_class=fmt,
        epilog="examples:\n  polypseg data check ../shared/datasets/CVC-ClinicDB\n"
        "  polypseg data check ../shared/datasets/PolypGen-val --json",
    )
    dsub = data.add_subparsers(dest="data_command", required=True)
    chk = dsub.add_parser(
        "check",
        help="pair and validate every image/mask",
        formatter_class=fmt,
        epilog="example:\n  polypseg data check ../shared/datasets/CVC-ClinicDB --json",
    )
    _data_args(chk, positional=True)
    chk.add_argument("--json", action="store_true", help="print the summary as JSON")
    chk.add_argument("--strict", action="store_true", help="exit 1 if any problem is found")
    chk.add_argument(
        "--recheck",
        action="store_true",
        help="read every file again (results for files whose size and mtime are unchanged are cached)",
    )
    chk.add_argument(
        "--groups", help="CSV frame,group (video sequence) for datasets without a built-in table"
    )
    dl = dsub.add_parser(
        "download",
        help="download a dataset archive and verify its checksum",
        formatter_class=fmt,
        epilog="example:\n  polypseg data download cvc-clinicdb --url https://host/CVC-ClinicDB.zip --sha256 <hex>",
    )
    dl.add_argument("name", help="dataset name, e.g. cvc-clinicdb")
    dl.add_argument("--url", help="archive address (zip)")
    dl.add_argument("--sha256", help="expected checksum of the archive")
    dl.add_argument("--dest", help="datasets folder (default: $POLYPSEG_DATA or ~/.cache/polypseg/datasets)")

    tr = sub.add_parser(
        "train",
        help="train a model",
        formatter_class=fmt,
        epilog="examples:\n  polypseg train --preset fast --out runs/fast\n"
        "  polypseg train --preset full --set optim.epochs=100 --set data.split_by=kfold --set data.fold=2\n"
        "  polypseg train --resume runs/fast\n"
        "  polypseg train --preset fast --print-config > my.yaml    # every key: edit, then --config my.yaml\n"
        "  polypseg train --preset full --data Kvasir-SEG --data CVC-ClinicDB   # two datasets as one\n"
        "  polypseg train --preset fast --set model.depth=3          # a shallower UNet++ (inputs: multiples of 8)\n"
        "  torchrun --nproc_per_node=2 -m polypseg train --preset full",
    )
    _config_args(tr)
    tr.add_argument("--out", help="run folder (default: runs/<preset or train>)")
    tr.add_argument("--resume", metavar="RUN", help="continue the run in this folder exactly")
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in an existing --out folder (its run files are removed first)",
    )

    cv = sub.add_parser(
        "cv",
        help="k-fold cross-validation by sequence: train, evaluate and pool every fold",
        formatter_class=fmt,
        epilog="examples:\n  polypseg cv --preset fast --out runs/cv_fast      # 5 folds; the same command continues it\n"
        "  polypseg cv --preset fast --jobs 2 --out runs/cv_fast   # two folds at a time, one thread each (2 cores)\n"
        "  polypseg cv --preset fast --set model.encoder=efficientnet-lite0 --set data.width=96 --out runs/cv_lite0 \\\n"
        "      --baseline runs/cv_fast      # + the paired difference against that recipe, frame by frame",
    )
    _config_args(cv)
    cv.add_argument("--out", default="runs/cv", help="folder of the folds' runs and cv.json")
    cv.add_argument("--overwrite", action="store_true", help="train every fold again, replacing the folder")
    cv.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="folds trained at once, each with a share of the CPU threads (default 1)",
    )
    cv.add_argument(
        "--baseline",
        metavar="CV_DIR",
        help="a finished cv folder of another recipe on the same data: adds the paired difference on the "
        "frames both held out (bootstrap over sequences) to the table and cv.json",
    )

    ev = sub.add_parser(
        "evaluate",
        help="full metric set, detection, frame classification, HTML report",
        formatter_class=fmt,
        epilog="example:\n  polypseg evaluate --checkpoint runs/full/best.pt --data ../shared/datasets/PolypGen-val --out eval/",
    )
    _data_args(ev)
    ev.add_argument(
        "--split", default="test", help="test (the checkpoint's held-out frames) | all | a split.json"
    )
    ev.add_argument("--out", default="eval", help="output folder")
    ev.add_argument(
        "--groups",
        help="CSV frame,group (video sequences) for data without a built-in table; default: the "
        "training's CSV if it names every frame. Gives metrics by sequence and intervals over sequences",
    )
    ev.add_argument(
        "--min-polyp-area",
        default=DEFAULT_MIN_POLYP_AREA,
        help="smallest ground-truth component counted as a polyp to detect, a share of the frame or pixels "
        "(default 0.01%%: smaller ones are stray pixels in the masks, 24 of 1-6 px in CVC-ClinicDB)",
    )
    _inference_args(ev)

    cm = sub.add_parser(
        "compare",
        help="two evaluations of the same frames, frame by frame, with intervals over sequences",
        formatter_class=fmt,
        epilog="examples:\n  polypseg compare eval_new/ eval_old/             # two `evaluate` folders\n"
        "  polypseg compare runs/cv_lite0 runs/cv_fast      # two finished `cv` folders",
    )
    cm.add_argument("this", help="an evaluate folder or a finished cv folder")
    cm.add_argument("baseline", help="the same, for the model to compare against")
    cm.add_argument("--json", help="also write the comparison here")

    pr = sub.add_parser(
        "predict",
        help="masks, overlays and polyp boxes for images, folders and videos",
        formatter_class=fmt,
        epilog="examples:\n  polypseg predict frames/ procedure.mp4 --out predictions/\n"
        "  polypseg predict videos/*.mp4 --outputs json --out detections/   # boxes and episodes only",
    )
    pr.add_argument("inputs", nargs="+", help="image files, folders, globs or videos")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument(
        "--outputs",
        default="json,mask,overlay",
        help="which to write, comma-separated (default all): json (per image; JSON lines per video), "
        "mask (PNG per image; NAME_masks/FRAME.png per video), overlay (PNG per image, mp4 per video); a video's summary is always written. "
        "--outputs json skips drawing and encoding: a 1920x1080 video ran 1.3-1.5x faster on 2 CPU cores",
    )
    _inference_args(pr)

    ex = sub.add_parser(
        "export",
        help="export to ONNX with a parity check",
        formatter_class=fmt,
        epilog="example:\n  polypseg export --checkpoint runs/full/best.pt --format onnx --out model.onnx --prune 2",
    )
    ex.add_argument(
        "--checkpoint",
        action="append",
        metavar="CKPT",
        help="model to export (.pt or .safetensors; or full/fast, the bundled models; default: full); "
        "repeat it, or name a finished `polypseg cv` folder, for one ONNX graph of their mean (one input size)",
    )
    ex.add_argument(
        "--format",
        choices=["onnx", "safetensors"],
        default="onnx",
        help="onnx (with a parity check) or safetensors (fp16 weights + description, as bundled)",
    )
    ex.add_argument("--out", required=True, help="the file to write (.onnx or .safetensors)")
    ex.add_argument(
        "--overwrite", action="store_true", help="replace --out (and its _int8.onnx) if it exists"
    )
    ex.add_argument(
        "--prune", type=int, help="head 1..4 (1..depth; default: the deepest); 0 = the mean of the heads"
    )
    ex.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="an ONNX graph that takes any batch size (default: batch 1)",
    )
    ex.add_argument(
        "--data",
        help="real frames for the parity check and int8 calibration (default: the default dataset; "
        "without one, the parity check uses seeded random frames and int8 is refused)",
    )
    ex.add_argument("--quantize", choices=["none", "int8"], default="none", help="also write an int8 model")
    ex.add_argument(
        "--min-score",
        type=float,
        help="store an operating point in the exported model: the lowest peak probability of a component "
        "counted as a polyp, then the default of predict, evaluate and serve (choose it on validation frames)",
    )
    ex.add_argument(
        "--threshold",
        type=float,
        help="store the probability threshold of the masks in the exported model (default: the checkpoint's, "
        "0.5 unless trained with another), then the default of predict, evaluate and serve",
    )

    be = sub.add_parser(
        "benchmark",
        help="latency and throughput table (PyTorch and ONNX Runtime)",
        formatter_class=fmt,
        epilog="examples:\n  polypseg benchmark --device cpu --json bench.json\n"
        "  polypseg benchmark --checkpoint full --device cpu --int8\n"
        "  polypseg benchmark --checkpoint model.onnx          # an exported file, as it is",
    )
    be.add_argument(
        "--checkpoint",
        help="a model's variants (its heads) instead of the default architectures at 288x384; "
        "an .onnx file is timed alone, at its own size",
    )
    be.add_argument("--device", default="auto", help=DEVICE_HELP)
    be.add_argument("--height", type=int, help="input height (default: the checkpoint's, else 288)")
    be.add_argument("--width", type=int, help="input width (default: the checkpoint's, else 384)")
    be.add_argument("--iters", type=int, default=20, help="timed batch-1 runs per row (default 20)")
    be.add_argument("--json", help="write results here")
    be.add_argument(
        "--no-onnx", action="store_true", help="PyTorch only (on the CPU, ONNX Runtime is timed too)"
    )
    be.add_argument(
        "--int8",
        action="store_true",
        help="also time the int8 ONNX graph `export --quantize int8` writes (CPU), calibrated on 16 real frames",
    )
    be.add_argument("--data", help="frames for --int8's calibration (default: the default dataset)")

    sv = sub.add_parser(
        "serve",
        help="REST API and web page",
        formatter_class=fmt,
        epilog="examples:\n  polypseg serve --port 8000   # then open http://127.0.0.1:8000/\n"
        "  polypseg serve --checkpoint runs/full/best.pt --tta --min-score 0.9 --host 0.0.0.0",
    )
    _model_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="default 8000")
    return ap


def _cmd_data_check(a) -> int:
    from polypseg.data.layouts import discover
    from polypseg.data.splits import load_groups
    from polypseg.data.validate import validate

    ds = discover(a.data, a.images, a.masks)
    v = validate(ds, use_cache=not a.recheck)
    summary = v.summary()
    ds.pairs = v.good
    groups, source = load_groups(ds, a.groups)
    summary["groups"] = len(set(groups))
    summary["groups_source"] = source
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{summary['root']}  (layout: {summary['layout']})")
        print(f"  pairs:      {summary['pairs']}")
        print(f"  negatives:  {summary['negatives']} (empty masks)")
        sizes = ", ".join(f"{k} ({n})" for k, n in list(summary["image_sizes"].items())[:6])
        more = len(summary["image_sizes"]) - 6
        print(f"  sizes:      {sizes}{f', +{more} more' if more > 0 else ''}")
        print(f"  groups:     {summary['groups']} ({source})")
        print(f"  problems:   {summary['errors']} errors, {summary['warnings']} warnings")
        for p in summary["problems"]:
            print(f"    {p['severity']}: {p['file']}: {p['problem']}")
    return 1 if a.strict and summary["problems"] else 0


def _cmd_data_download(a) -> int:
    from pathlib import Path

    from polypseg.data.download import download
    from polypseg.data.layouts import data_home

    path = download(a.name, Path(a.dest) if a.dest else data_home(), url=a.url, sha256=a.sha256)
    print(f"downloaded {a.name} to {path}")
    return 0


def _run_source(a) -> dict:
    """The data and display arguments `train` and `cross_validate` share."""
    return dict(
        data=a.data, images=a.images, masks=a.masks, cache_dir=a.cache_dir, progress=not a.no_progress
    )


def _train_out(a) -> str:
    """The run folder of a new `train` run: --out, else runs/<preset or train>."""
    return a.out or f"runs/{a.preset or 'train'}"


def _cmd_train(a) -> int:
    from polypseg.config import config_yaml, load_config
    from polypseg.train import train

    if a.resume:
        if a.print_config:
            raise PolypsegError(
                f"--print-config shows a new run's config; a run's own is {a.resume}/config.yaml"
            )
        if a.config or a.preset or a.overrides:
            raise PolypsegError("--resume continues with the run's own config; drop --config/--preset/--set")
        train(resume=a.resume, **_run_source(a))
        return 0
    cfg = load_config(a.config, a.preset, a.overrides)
    if a.print_config:
        print(config_yaml(cfg), end="")
        return 0
    train(
        cfg,
        out=_train_out(a),
        **_run_source(a),
        overwrite=a.overwrite,
    )
    return 0


def _cmd_cv(a) -> int:
    from polypseg.config import config_yaml, load_config
    from polypseg.crossval import cross_validate

    cfg = load_config(a.config, a.preset, [*a.overrides, "data.split_by=kfold"])
    if a.print_config:
        print(config_yaml(cfg), end="")
        return 0
    cross_validate(
        cfg,
        out=a.out,
        **_run_source(a),
        overwrite=a.overwrite,
        jobs=a.jobs,
        baseline=a.baseline,
    )
    return 0


def _prune(a) -> int | None:
    """None (the default head) unless --prune names one; --mode accurate is the mean of the heads (0)."""
    if a.mode == "accurate":
        if a.prune:
            raise PolypsegError("--mode accurate averages the heads; drop --prune, or use --mode fast")
        return 0
    return a.prune


def _checkpoint(a) -> list[str] | str | None:
    """The --checkpoint list; --mode fast without one means the bundled fast model (the default: full)."""
    return a.checkpoint or ("fast" if a.mode == "fast" else None)


def _model(a) -> dict:
    """The model options (`_model_args`) as keywords for Predictor.from_checkpoint and its callers."""
    return dict(
        checkpoint=_checkpoint(a),
        threshold=a.threshold,
        prune=_prune(a),
        tta=a.tta,
        min_area=a.min_area,
        min_score=a.min_score,
        device=a.device,
    )


def _inference(a) -> dict:
    """The options `evaluate` and `predict` share (`_inference_args`), as keywords."""
    return dict(**_model(a), batch_size=a.batch_size, overwrite=a.overwrite)


def _cmd_evaluate(a) -> int:
    from polypseg.evaluate import evaluate

    evaluate(
        data=a.data,
        images=a.images,
        masks=a.masks,
        split=a.split,
        out=a.out,
        groups=a.groups,
        min_polyp_area=a.min_polyp_area,
        **_inference(a),
    )
    return 0


def _cmd_compare(a) -> int:
    from polypseg import atomic
    from polypseg.compare import compare, format_compare

    if a.json:
        atomic.claim_output_file(a.json, overwrite=True)
    r = compare(a.this, a.baseline)
    print(format_compare(r))
    if a.json:
        atomic.write_json(Path(a.json), r)
    return 0


def _cmd_predict(a) -> int:
    from polypseg.predict import predict_paths

    ok = predict_paths(a.inputs, out=a.out, outputs=a.outputs, **_inference(a))
    return 0 if ok else 1


def _cmd_export(a) -> int:
    from polypseg.export import export_onnx, export_safetensors

    if a.format == "safetensors":
        if not a.checkpoint:
            raise PolypsegError("--format safetensors needs --checkpoint")
        export_safetensors(a.checkpoint, a.out, a.min_score, a.overwrite, a.threshold)
        print(f"wrote {a.out}")
        return 0

    export_onnx(
        checkpoint=a.checkpoint,
        out=a.out,
        prune=a.prune,
        dynamic_batch=a.dynamic_batch,
        data=a.data,
        quantize=a.quantize,
        min_score=a.min_score,
        overwrite=a.overwrite,
        threshold=a.threshold,
    )
    return 0


def _cmd_benchmark(a) -> int:
    from polypseg.bench import run_benchmark

    run_benchmark(
        checkpoint=a.checkpoint,
        device=a.device,
        height=a.height,
        width=a.width,
        iters=a.iters,
        json_path=a.json,
        onnx=not a.no_onnx,
        int8=a.int8,
        data=a.data,
    )
    return 0


def _cmd_serve(a) -> int:
    from polypseg.serve.app import run

    run(host=a.host, port=a.port, **_model(a))
    return 0


COMMANDS = {
    ("data", "check"): _cmd_data_check,
    ("data", "download"): _cmd_data_download,
    ("train", None): _cmd_train,
    ("cv", None): _cmd_cv,
    ("evaluate", None): _cmd_evaluate,
    ("compare", None): _cmd_compare,
    ("predict", None): _cmd_predict,
    ("export", None): _cmd_export,
    ("benchmark", None): _cmd_benchmark,
    ("serve", None): _cmd_serve,
}


def _resume_hint(a) -> str:
    """How to go on after Ctrl-C, for the commands that save their progress."""
    if a.command == "cv":
        return "; the same command continues (finished folds are kept)"
    if a.command != "train":
        return ""
    run = Path(a.resume or _train_out(a))
    if (run / "last.pt").is_file():
        return f"; `polypseg train --resume {run}` continues from the last saved epoch"
    if a.resume:
        return ""
    return "; nothing was saved yet, and the run's files are removed: the same command starts again"


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a scheduler, `docker stop`), raised like Ctrl-C so that the same cleanup
    runs: no temp files or half-written outputs are left behind."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = COMMANDS[(args.command, getattr(args, "data_command", None))]
    # `serve` leaves SIGTERM to uvicorn, which shuts the server down gracefully and exits 0.
    catch = threading.current_thread() is threading.main_thread() and args.command != "serve"
    before = signal.signal(signal.SIGTERM, _terminate) if catch else None
    try:
        return handler(args)
    except PolypsegError as e:
        print(f"polypseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        print(f"polypseg: {how[0]}{_resume_hint(args)}", file=sys.stderr)
        return how[1]
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # the machine refused a read or write midway (disk full, a folder removed)
        print(f"polypseg: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:  # a batch or input too large for the device
        if not (what := out_of_memory(e)):
            raise
        print(f"polypseg: error: {what}; a smaller --batch-size or input needs less", file=sys.stderr)
        return 2
    finally:
        if catch:
            signal.signal(signal.SIGTERM, before)


def _os_error(e: OSError) -> str:
    """`e` on one line: the file it names and the reason."""
    return f"{e.filename}: {e.strerror}" if e.filename else (e.strerror or str(e))


if __name__ == "__main__":
    sys.exit(main())
