from splitpoint.entry import run

run()
