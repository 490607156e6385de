from splitpoint.cli import run

run()
