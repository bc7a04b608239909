"""`septet segment`: placeholder wiring until its issue lands; exits 1 with a clear sentence."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del args, parser
    print("septet segment: not available in this build yet", file=sys.stderr)
    return 1
