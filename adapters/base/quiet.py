"""Quiet loading: the reports and warnings that transformers and bitsandbytes print on every
load of a fresh task head or a quantized layer are expected here, and say nothing a user can act on.

Its own module (torch-free) so that resolving a base, loading it and attaching adapters can all
use it without importing each other.
"""

from __future__ import annotations

import contextlib
import logging
import warnings


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs its kernel choices at INFO/WARNING on every quantized load."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_loading():
    """transformers prints a load report for every fresh head; expected here, so keep it quiet."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
