"""Inference layers (predict, evaluate, export, serve, benchmark) never import the training code."""

from __future__ import annotations

import subprocess
import sys


def test_inference_does_not_import_training():
    code = (
        "import sys, polypseg.predict, polypseg.evaluate, polypseg.export, polypseg.serve.app, polypseg.bench; "
        "print(sorted(m for m in sys.modules if m in ('polypseg.train', 'polypseg.losses', 'polypseg.data.augment')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
