"""Top-level shim so `python cli.py ...` works from a checkout: same as `maasctl ...`."""

from maas_lib.cli import run

if __name__ == "__main__":
    run()
