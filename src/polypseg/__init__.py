"""polypseg: find colorectal polyps in colonoscopy frames with UNet++."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__", "create_model"]


def __getattr__(name: str):
    # Lazy imports keep `import polypseg` (and the CLI's --help) fast.
    if name == "Predictor":
        from polypseg.predict import Predictor

        return Predictor
    if name == "create_model":
        from polypseg.models import create_model

        return create_model
    raise AttributeError(name)
