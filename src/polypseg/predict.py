"""Inference: the `Predictor` API and `polypseg predict` over images, folders, globs and videos.

Preprocessing is exactly the training path's: RGB uint8 -> `imageio.resize_to` the checkpoint's
input size -> the network (which normalises inside itself). Probabilities are resized back to the
input's size (bilinear) before thresholding, so masks and boxes are in the input's pixels.

JSON schema of one image (or one video frame):
    {"file": str, "width": int, "height": int, "threshold": float, "min_score": float,
     "polyp_present_score": float,   # max pixel probability in the frame (0..1)
     "polyps": [{"box_xyxy": [x0, y0, x1, y1], "area_px": int, "score": float, "centroid": [x, y]}]}
`score` is the highest probability inside that polyp's component; x1/y1 are exclusive. A polyp is a
component of the thresholded mask with at least `min_area` pixels and a score of at least `min_score`;
the mask itself holds every pixel above the threshold.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from polypseg import atomic
from polypseg.detection import (
    DEFAULT_MIN_AREA,
    Component,
    check_min_score,
    check_operating_point,
    components,
    mask_box,
    min_area_px,
    peaks,
)
from polypseg.devices import environment
from polypseg.errors import PolypsegError, at_least_one
from polypseg.imageio import (
    VIDEO_EXTENSIONS,
    encode_png,
    read_rgb,
    resize_to,
    rgb_to_bgr,
    sniff_image,
    to_rgb_uint8,
    write_png,
)
from polypseg.inorder import InOrder
from polypseg.network import Network, agreed, resolve_checkpoints


@dataclass
class Prediction:
    width: int
    height: int
    threshold: float
    polyp_present_score: float
    polyps: list[dict]
    probability: np.ndarray = field(repr=False)  # (H, W) float32 at the input's size
    mask: np.ndarray = field(repr=False)  # (H, W) bool
    file: str | None = None
    # every component of at least min_area pixels with its score, below min_score too (for evaluate's curve)
    components: list[tuple[Component, float]] = field(default_factory=list, repr=False)
    min_score: float = 0.0

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "threshold": self.threshold,
            "min_score": self.min_score,
            "polyp_present_score": self.polyp_present_score,
            "polyps": self.polyps,
        }


class Predictor:
    """Run a polyp model, or an ensemble of models, on RGB uint8 frames.

    Example:
        >>> p = Predictor.from_checkpoint("runs/full/best.pt", device="cpu")
        >>> result = p.predict(rgb)          # rgb: (H, W, 3) uint8
        >>> result.to_json()["polyps"]
        >>> five = Predictor.from_checkpoint("runs/cv")  # a `polypseg cv` folder: its folds' mean
    """

    def __init__(
        self,
        networks: list[Network],
        threshold: float | None = None,
        tta: bool = False,
        min_area: int | str = DEFAULT_MIN_AREA,
        min_score: float | None = None,
    ):
        self.networks = networks
        first = networks[0]
        self.meta = first.meta  # the first model's description: its split, groups and architecture
        self.metas = [n.meta for n in networks]
        self.device = first.device
        # An ensemble averages its models' probabilities on the first model's grid.
        self.height, self.width = first.height, first.width
        if threshold is None:
            threshold = agreed(self.metas, "threshold", 0.5, "choose one with --threshold")
        self.threshold = float(threshold)
        self.tta = tta
        self.min_area = min_area
        # None: the operating point stored in the checkpoints (`export --min-score`), else 0
        if min_score is None:
            min_score = agreed(self.metas, "min_score", 0.0, "choose one with --min-score")
        self.min_score = check_min_score(min_score)
        self.prune = first.prune
        self.head = " + ".join(dict.fromkeys(n.head for n in networks))

    @property
    def output(self) -> str:
        """What this predictor returns, in words, for reports: 'head L4', 'head L4, flip TTA',
        'head L4, mean of 5 models'..."""
        models = sum(n.models for n in self.networks)
        many = f", mean of {models} models" if models > 1 else ""
        return self.head + many + (", flip TTA" if self.tta else "")

    @classmethod
    def from_checkpoint(
        cls,
        path=None,
        device: str = "auto",
        prune: int | None = None,
        threshold: float | None = None,
        tta: bool = False,
        min_area: int | str = DEFAULT_MIN_AREA,
        min_score: float | None = None,
    ) -> Predictor:
        """`path`: a .pt, .safetensors or .onnx file, "full"/"fast" (None: the bundled full model), a
        finished `polypseg cv` folder, or a list of these: several models are an ensemble, the mean of
        their probabilities. `prune`: None = the deepest head alone, 0 = the mean of the heads,
        1..depth = that head's sub-network (an ONNX model is fixed to the head it was exported with).
        `threshold`, `min_score`: None = the checkpoints' (0 unless exported with one); an ensemble's
        models must agree on them, or they are given here."""
        check_operating_point(threshold, min_area, min_score)
        networks = [Network.load(p, device, prune) for p in resolve_checkpoints(path)]
        return cls(networks, threshold, tta, min_area, min_score=min_score)

    def network_probabilities(self, frames: list[np.ndarray]) -> np.ndarray:
        """Probabilities at the network's size for a list of RGB uint8 frames (any sizes); an ensemble's
        mean, each model seeing the frames at its own input size."""
        total = np.zeros((len(frames), self.height, self.width), np.float32)
        resized = {}  # the frames at each input size, resized once for all the models of that size
        for n in self.networks:
            size = (n.height, n.width)
            if size not in resized:
                resized[size] = np.stack([resize_to(f, *size) for f in frames])
            x = resized[size]
            p = n.flip_mean(x) if self.tta else n(x)
            if p.shape[1:] != (self.height, self.width):
                p = np.stack(
                    [cv2.resize(q, (self.width, self.height), interpolation=cv2.INTER_LINEAR) for q in p]
                )
            total += p
        return total / len(self.networks)

    def postprocess(
        self, prob_net: np.ndarray, height: int, width: int, file: str | None = None
    ) -> Prediction:
        prob = (
            prob_net
            if prob_net.shape == (height, width)
            else cv2.resize(prob_net, (width, height), interpolation=cv2.INTER_LINEAR)
        )
        mask = prob > self.threshold
        labels, comps = components(mask, min_area_px(self.min_area, height, width))
        scored = list(zip(comps, peaks(prob, labels, comps)))
        polyps = [
            {
                "box_xyxy": list(c.box_xyxy),
                "area_px": c.area_px,
                "score": round(float(peak), 4),
                "centroid": [round(c.centroid[0], 1), round(c.centroid[1], 1)],
            }
            for c, peak in scored
            if peak >= self.min_score
        ]
        polyps.sort(key=lambda p: -p["score"])
        return Prediction(
            width,
            height,
            self.threshold,
            round(float(prob_net.max()), 4),
            polyps,
            prob,
            mask,
            file,
            scored,
            self.min_score,
        )

    def predict_batch(self, frames: list[np.ndarray], files: list[str] | None = None) -> list[Prediction]:
        frames = [to_rgb_uint8(f) for f in frames]
        probs = self.network_probabilities(frames)
        files = files or [None] * len(frames)
        return [self.postprocess(p, f.shape[0], f.shape[1], n) for p, f, n in zip(probs, frames, files)]

    def predict(self, frame: np.ndarray) -> Prediction:
        return self.predict_batch([frame])[0]

    def device_name(self) -> str:
        return self.networks[0].device_name()

    @property
    def precision(self) -> str:
        return self.networks[0].precision

    def environment(self) -> dict:
        """What the predictions ran on (devices.environment), with ONNX Runtime's version where it ran them."""
        env = {**environment(self.networks[0].device), "device": self.device_name()}
        if any(n.session is not None for n in self.networks):
            import onnxruntime

            env["onnxruntime"] = onnxruntime.__version__
        return env


def overlay(rgb: np.ndarray, pred: Prediction) -> np.ndarray:
    """Translucent green fill, contour, and a box with its score per polyp."""
    out = rgb.copy()
    box = mask_box(pred.mask)
    if box is not None:
        # Blend only inside the box around the mask (2.5 against 20 ms at 1920x1080, NOTES 42).
        crop = out[box]
        tinted = cv2.addWeighted(crop, 0.6, np.full_like(crop, (0, 255, 0)), 0.4, 0)
        np.copyto(crop, tinted, where=pred.mask[box][:, :, None])
        cnts, _ = cv2.findContours(pred.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, cnts, -1, (0, 255, 0), max(1, rgb.shape[1] // 300))
    thick = max(1, rgb.shape[1] // 250)
    scale = max(0.4, rgb.shape[1] / 900)
    for p in pred.polyps:
        x0, y0, x1, y1 = p["box_xyxy"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 220, 0), thick)
        label = f"polyp {p['score']:.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y0 - 4 if y0 - th - 6 > 0 else y1 + th + 4
        cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 4, ty + 4), (255, 220, 0), -1)
        cv2.putText(out, label, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[Path], list[str]]:
    """Files, folders (recursive, images recognised by content) and globs -> (images, videos, problems)."""
    images, videos, problems = [], [], []
    for item in inputs:
        matches = (
            [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            if glob.has_magic(item)
            else [Path(item)]
        )
        if not matches:
            problems.append(f"{item}: no file matches")
        for m in matches:
            if m.is_dir():
                for f in sorted(m.rglob("*")):
                    if f.is_file() and not f.name.startswith("."):
                        if f.suffix.lower() in VIDEO_EXTENSIONS:
                            videos.append(f)
                        elif sniff_image(f):
                            images.append(f)
            elif m.is_file():
                if m.suffix.lower() in VIDEO_EXTENSIONS:
                    videos.append(m)
                else:
                    images.append(m)
            elif not glob.has_magic(item):
                problems.append(f"{m}: not found")
    return images, videos, problems


def _out_name(path: Path, used: set[str]) -> str:
    name, k = path.stem, 1
    while name in used:
        k += 1
        name = f"{path.stem}_{k}"
    used.add(name)
    return name


OUTPUTS = ("json", "mask", "overlay")


def parse_outputs(outputs: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """`--outputs json,mask,overlay` (any of them, at least one) as a set; an unknown name is an error."""
    names = [x.strip() for x in outputs.split(",")] if isinstance(outputs, str) else list(outputs)
    unknown = [x for x in names if x not in OUTPUTS]
    if unknown or not names:
        raise PolypsegError(
            f"--outputs takes a comma-separated list of {', '.join(OUTPUTS)}; got {','.join(names)!r}"
        )
    return frozenset(names)


def _write_frame(writer, rgb: np.ndarray, pred: Prediction) -> None:
    writer.write(rgb_to_bgr(overlay(rgb, pred)))


def _write_mask_frame(path: Path, pred: Prediction) -> None:
    # 8-bit 0/255 like the images' masks. Inside a temp folder that is renamed whole when the video ends,
    # so no file needs a rename of its own.
    path.write_bytes(encode_png(pred.mask.astype(np.uint8) * 255))


def predict_video(
    p: Predictor, path: Path, out: Path, name: str, batch_size: int, outputs=frozenset(OUTPUTS)
) -> dict:
    """A video's JSON lines (`json` in outputs), overlay video (`overlay`), masks (`mask`: one lossless
    PNG per frame, NAME_masks/FRAME.png with the JSON lines' frame number) and summary (always)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PolypsegError(f"{path}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    tmp_video = out / f".{name}_overlay.mp4.tmp.mp4"
    lines_tmp = out / f"{name}.jsonl.tmp"
    masks_tmp = out / f".{name}_masks.tmp"
    positives, n = [], 0
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", desc=path.name, leave=False, file=sys.stderr, disable=None)
    try:
        if "mask" in outputs:
            shutil.rmtree(masks_tmp, ignore_errors=True)  # a killed run's
            masks_tmp.mkdir()
        with (
            open(lines_tmp, "w") if "json" in outputs else contextlib.nullcontext() as lines,
            InOrder(workers=1, ahead=batch_size) as writes,
        ):
            while True:
                frames = []
                for _ in range(batch_size):
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if not frames:
                    break
                for pred, rgb in zip(p.predict_batch(frames), frames):
                    if lines is not None:
                        rec = pred.to_json()
                        rec["file"] = str(path)
                        rec["frame"] = n
                        lines.write(json.dumps(rec) + "\n")
                    positives.append(bool(pred.polyps))
                    if "overlay" in outputs:
                        if writer is None:
                            writer = cv2.VideoWriter(
                                str(tmp_video),
                                cv2.VideoWriter_fourcc(*"mp4v"),
                                fps,
                                (rgb.shape[1], rgb.shape[0]),
                            )
                        writes.submit(_write_frame, writer, rgb, pred)
                    if "mask" in outputs:
                        writes.submit(_write_mask_frame, masks_tmp / f"{n:06d}.png", pred)
                    n += 1
                bar.update(len(frames))
        if n == 0:
            raise PolypsegError(f"{path}: no frames could be read")
    except BaseException:  # an unreadable video or an interrupt leaves no partial outputs behind
        if writer is not None:
            writer.release()
        tmp_video.unlink(missing_ok=True)
        lines_tmp.unlink(missing_ok=True)
        shutil.rmtree(masks_tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
        cap.release()
    if writer is not None:
        writer.release()
        os.replace(tmp_video, out / f"{name}_overlay.mp4")
    if "json" in outputs:
        os.replace(lines_tmp, out / f"{name}.jsonl")
    if "mask" in outputs:
        shutil.rmtree(out / f"{name}_masks", ignore_errors=True)  # an earlier run's, under --overwrite
        os.replace(masks_tmp, out / f"{name}_masks")
    episodes, start = [], None
    for i, pos in enumerate(positives + [False]):
        if pos and start is None:
            start = i
        if not pos and start is not None:
            episodes.append(
                {
                    "first_frame": start,
                    "last_frame": i - 1,
                    "frames": i - start,
                    "start_s": round(start / fps, 3),
                    "end_s": round((i - 1) / fps, 3),
                }
            )
            start = None
    summary = {
        "file": str(path),
        "frames": n,
        "fps": fps,
        "frames_with_polyp": int(sum(positives)),
        "episodes": episodes,
        "threshold": p.threshold,
    }
    atomic.write_json(out / f"{name}_summary.json", summary)
    return summary


def _write_image_outputs(stem: Path, rgb: np.ndarray, pred: Prediction, outputs=frozenset(OUTPUTS)) -> None:
    if "mask" in outputs:
        write_png(stem.with_name(stem.name + "_mask.png"), pred.mask.astype(np.uint8) * 255)
    if "overlay" in outputs:
        write_png(stem.with_name(stem.name + "_overlay.png"), overlay(rgb, pred))
    if "json" in outputs:
        atomic.write_json(stem.with_name(stem.name + ".json"), pred.to_json())


def _predict_images(
    p: Predictor,
    images: list[Path],
    out_dir: Path,
    used: set[str],
    batch_size: int,
    bar,
    problems: list[str],
    outputs=frozenset(OUTPUTS),
) -> int:
    """Mask, overlay and JSON per image; returns how many were written. Unreadable files go to `problems`.
    The outputs are written by other threads while the network runs on the next batch (NOTES 42): as many
    as PyTorch's threads, at most 4 (two gave 1.15x over one with `full`, 1.3x with `fast` in ONNX, on 2
    cores), since a 1920x1080 overlay PNG alone costs about as much as the network."""
    done = 0
    with InOrder(workers=min(4, torch.get_num_threads()), ahead=batch_size) as writes:
        for i in range(0, len(images), batch_size):
            batch, names = [], []
            for f in images[i : i + batch_size]:
                try:
                    batch.append(read_rgb(f))
                    names.append(f)
                except PolypsegError as e:
                    problems.append(str(e))
            bar.update(len(images[i : i + batch_size]))
            if not batch:
                continue
            for f, rgb, pred in zip(names, batch, p.predict_batch(batch, [str(n) for n in names])):
                writes.submit(_write_image_outputs, out_dir / _out_name(f, used), rgb, pred, outputs)
                done += 1
    return done


def predict_paths(
    inputs: list[str],
    out: str,
    checkpoint: str | None = None,
    threshold: float | None = None,
    tta: bool = False,
    prune: int | None = None,
    batch_size: int = 8,
    min_area: int | str = DEFAULT_MIN_AREA,
    device: str = "auto",
    overwrite: bool = False,
    min_score: float | None = None,
    outputs: str | list[str] | tuple[str, ...] = OUTPUTS,
) -> bool:
    """Write mask, overlay and JSON per image, and annotated video + JSON lines + summary per video
    (`outputs`: which of json, mask, overlay; a video's summary is always written).

    Returns True if at least one input was processed. Unreadable inputs are reported and skipped.
    """
    at_least_one("--batch-size", batch_size)
    outputs = parse_outputs(outputs)
    images, videos, problems = expand_inputs(inputs)
    if not images and not videos:
        raise PolypsegError("; ".join(problems) or "no images or videos found in " + ", ".join(inputs))
    out_dir = Path(out)
    # Never an input's folder, nor anywhere inside a folder read recursively (a second run would read
    # the first one's overlays as frames).
    in_trees = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    in_dirs = set(in_trees) | {f.resolve().parent for f in images + videos}
    where = out_dir.resolve()
    if where in in_dirs or any(t in where.parents for t in in_trees):
        raise PolypsegError(
            f"--out {out_dir} is in an input folder; choose another so inputs are never overwritten"
        )
    atomic.claim_output_dir(out_dir, overwrite)
    p = Predictor.from_checkpoint(
        checkpoint,
        device=device,
        prune=prune,
        threshold=threshold,
        tta=tta,
        min_area=min_area,
        min_score=min_score,
    )
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _predict_all(p, images, videos, problems, out_dir, batch_size, outputs)
    except BaseException:  # an error, Ctrl-C or SIGTERM: leave no trace of a run that wrote nothing
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _predict_all(p, images, videos, problems, out_dir, batch_size, outputs) -> bool:
    used: set[str] = set()
    t0 = time.perf_counter()
    done = frames_done = 0
    if images:
        from tqdm import tqdm

        bar = tqdm(
            total=len(images), unit="img", desc="predicting", leave=False, file=sys.stderr, disable=None
        )
        done = frames_done = _predict_images(p, images, out_dir, used, batch_size, bar, problems, outputs)
        bar.close()
    for v in videos:
        try:
            s = predict_video(p, v, out_dir, _out_name(v, used), batch_size, outputs)
            done += 1
            frames_done += s["frames"]
        except PolypsegError as e:
            problems.append(str(e))
    dt = time.perf_counter() - t0
    for msg in problems:
        print(f"skipped: {msg}", file=sys.stderr)
    print(
        f"{done} input(s), {frames_done} frame(s) in {dt:.1f} s ({frames_done / max(dt, 1e-9):.1f} frames/s on "
        f"{p.device_name()}, {p.precision}, {p.output}); outputs in {out_dir}"
    )
    if not done:
        raise PolypsegError("nothing could be processed")
    return True
