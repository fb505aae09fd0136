"""report.html: one self-contained file (images embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from polypseg.imageio import encode_png


def _png_b64(rgb: np.ndarray) -> str:
    return base64.b64encode(encode_png(rgb)).decode()


def _fig_b64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _curves(dice_curve: np.ndarray, pr) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.linspace(0, 1, len(dice_curve))
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(t, dice_curve)
    ax.set(xlabel="threshold", ylabel="mean Dice", ylim=(0, 1), title="Dice vs threshold")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    a = _fig_b64(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(pr[0], pr[1])
    ax.set(
        xlabel="recall (pixels)",
        ylabel="precision (pixels)",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Precision-recall",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return a, _fig_b64(fig)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def _precision(metrics: dict) -> str:
    """The precision the network ran in, as ', bf16 autocast' (older metrics.json files lack it)."""
    return f", {html.escape(metrics['precision'])}" if metrics.get("precision") else ""


def _checkpoints(metrics: dict) -> str:
    """'Checkpoint <code>PATH</code> (sha256 ...)', or each model of an ensemble."""
    paths, hashes = metrics["checkpoint"], metrics["checkpoint_sha256"]
    if isinstance(paths, str):
        return f"Checkpoint <code>{html.escape(paths)}</code> (sha256 {hashes[:16]}…)"
    models = ", ".join(f"<code>{html.escape(p)}</code> (sha256 {h[:16]}…)" for p, h in zip(paths, hashes))
    return f"Ensemble of {len(paths)} models: {models}"


def write_report(path, metrics: dict, rows: list[dict], thumbs: list, dice_curve, pr) -> None:
    dice_png, pr_png = _curves(dice_curve, pr)
    seg, det, cls = metrics["segmentation"], metrics["detection"], metrics["classification"]
    names = {
        "dice": f"Dice@{metrics['threshold']}",
        "iou": f"IoU@{metrics['threshold']}",
        "mdice": "mDice (256 thresholds)",
        "miou": "mIoU (256 thresholds)",
        "s_measure": "S-measure",
        "wf_measure": "weighted F-measure",
        "mean_e_measure": "mean E-measure",
        "max_e_measure": "max E-measure",
        "mae": "MAE",
        "hd95": "HD95 (px)",
        "precision": "precision",
        "recall": "recall",
        "specificity": "specificity",
    }
    seg_rows = "".join(f"<tr><td>{names[k]}</td><td>{_fmt(seg[k])}</td></tr>" for k in names)
    det_rows = (
        "".join(
            f"<tr><td>{k}</td><td>{_fmt(det[k])}</td></tr>"
            for k in ("recall", "precision", "f1", "fp_per_frame", "tp", "fp", "fn")
        )
        + f"<tr><td>minimum score</td><td>{metrics.get('min_score', 0.0):g}</td></tr>"
        + (
            "<tr><td>stray mask components not counted as polyps (under "
            f"{html.escape(str(metrics['min_polyp_area']))} of the frame)</td><td>{metrics['gt_specks']}</td></tr>"
            if "gt_specks" in metrics
            else ""
        )
    )
    cls_rows = "".join(
        f"<tr><td>{k}</td><td>{_fmt(cls[k])}</td></tr>"
        for k in ("auroc", "sensitivity", "specificity", "positives", "negatives", "score")
    )

    def group_table(title: str, label: str, groups: list[dict]) -> str:
        body = "".join(
            f"<tr><td>{html.escape(g[label])}</td><td>{g['frames']}</td><td>{g['polyp_frames']}</td>"
            + "".join(f"<td>{_fmt(g[k])}</td>" for k in ("dice", "iou", "mdice", "s_measure", "polyp_recall"))
            + f"<td>{g['fp_per_frame']:.2f}</td></tr>"
            for g in sorted(groups, key=lambda g: (math.isnan(g["dice"]), g["dice"]))
        )
        return (
            f"<h2>{title} (lowest Dice first)</h2><table><tr><th>{label}</th><th>frames</th>"
            f"<th>with polyp</th><th>{names['dice']}</th><th>{names['iou']}</th><th>mDice</th><th>S-measure</th>"
            f"<th>polyp recall</th><th>FP/frame</th></tr>{body}</table>"
            if body
            else ""
        )

    curve_rows = "".join(
        f"<tr><td>{'&ge; ' + format(c['min_score'], 'g') if c['min_score'] else 'every component'}"
        f"{' (used)' if c['min_score'] == metrics.get('min_score', 0.0) else ''}</td>"
        + "".join(f"<td>{_fmt(c[k])}</td>" for k in ("recall", "precision", "fp_per_frame"))
        + "</tr>"
        for c in metrics.get("detection_curve", [])
    )
    size_rows = "".join(
        f"<tr><td>{html.escape(b['size'])}</td><td>{b['polyps']}</td><td>{b['found']}</td><td>{_fmt(b['recall'])}</td>"
        f"<td>{b['frames']}</td><td>{_fmt(b['dice'])}</td><td>{_fmt(b['mdice'])}</td></tr>"
        for b in metrics.get("by_size", [])
    )
    size_table = (
        "<h2>By polyp area</h2><p>Each polyp binned by its area as a share of the frame (apparent size: near "
        "polyps look large, so this is how visible it is, not its size in mm); each frame by the area of "
        "all its polyps. Recall at the minimum score in use.</p>"
        f"<table><tr><th>area</th><th>polyps</th><th>found</th><th>recall</th><th>frames</th>"
        f"<th>{names['dice']}</th><th>mDice</th></tr>{size_rows}</table>"
        if size_rows
        else ""
    )
    curve_table = (
        "<h2>Detection at other minimum scores</h2><p>A component counts as a detected polyp only if its "
        "highest probability reaches the minimum score (<code>--min-score</code>): fewer false alarms, "
        "perhaps fewer polyps found. Choose the operating point on validation data, not on a test set.</p>"
        f"<table><tr><th>minimum score</th><th>recall</th><th>precision</th><th>FP/frame</th></tr>{curve_rows}</table>"
        if curve_rows
        else ""
    )
    seq_table = group_table("By dataset", "dataset", metrics.get("per_dataset", [])) + group_table(
        "By video sequence", "sequence", metrics.get("per_sequence", [])
    )
    lo, hi = seg["dice_ci95"]
    interval = (
        f"<p>95% interval of the mean {names['dice']}: {_fmt(lo)} to {_fmt(hi)}; of mDice: "
        f"{_fmt(seg['mdice_ci95'][0])} to {_fmt(seg['mdice_ci95'][1])} ({html.escape(seg['ci95_method'])}, "
        f"over {html.escape(seg['ci95_over'])}).</p>"
    )
    scored = [(i, r["dice"]) for i, r in enumerate(rows) if "dice" in r]
    scored.sort(key=lambda x: x[1])
    worst, best = scored[:10], scored[-5:][::-1]

    def gallery(items) -> str:
        cells = []
        for i, d in items:
            img, gt, ov = thumbs[i]
            cells.append(
                f"<figure><img src='data:image/png;base64,{_png_b64(np.concatenate([img, gt, ov], 1))}'>"
                f"<figcaption>{html.escape(rows[i]['name'])}: Dice {d:.3f}</figcaption></figure>"
            )
        return "".join(cells)

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>polypseg evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:0.5em 2em 1em 0;display:inline-table;vertical-align:top}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{margin:0.6em 0}}img{{max-width:100%}}code{{background:#f3f3f3}}</style></head><body>
<h1>polypseg evaluation</h1>
<p>Data <code>{html.escape(metrics["data"])}</code>: {metrics["frames"]} frames ({metrics["polyp_frames"]} with a polyp), {html.escape(metrics["split"])}.<br>
{_checkpoints(metrics)}, threshold {metrics["threshold"]}, output {html.escape(metrics["output"])}, device {html.escape(metrics["device"])}{_precision(metrics)}.<br>
{html.escape(metrics["resize_note"])}. Frames with an empty mask are left out of the segmentation means.</p>
<h2>Metrics</h2>
<table><tr><th>segmentation (mean per image)</th><th></th></tr>{seg_rows}</table>
<table><tr><th>detection per polyp</th><th></th></tr>{det_rows}</table>
<table><tr><th>frame classification</th><th></th></tr>{cls_rows}</table>
{interval}{curve_table}{size_table}{seq_table}
<h2>Curves</h2><img src="data:image/png;base64,{dice_png}"> <img src="data:image/png;base64,{pr_png}">
<h2>Worst frames (image | truth | prediction)</h2>{gallery(worst)}
<h2>Best frames</h2>{gallery(best)}
</body></html>"""
    path.write_text(page)
