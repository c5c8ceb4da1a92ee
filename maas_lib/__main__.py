from maas_lib.cli import run

run()
