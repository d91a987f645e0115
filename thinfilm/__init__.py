"""thinfilm: conditional diffusion for PMMA thin-film tensile-test frames, in pure PyTorch.

This module owns the one error type a user can cause (`UserError`), the wrapper that turns it
into a one-line message and a non-zero exit for every command-line entry point, and `LEVELS`, the unit
the data pipeline and the sampling core share.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

__version__ = "0.1.0"
LEVELS = 127.5                     # 8-bit levels per unit of the network's space ([-1, 1] is 0..255)


class UserError(Exception):
    """A mistake in the user's input (config, CSV, frame, checkpoint): reported in one line."""


def cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run an entry point; a `UserError` becomes `error: ...` on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:              # output piped into a reader that stopped (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error when Python flushes
        raise SystemExit(1) from None
