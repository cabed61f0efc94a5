# Shortcuts for the scripts in tools/ (each installs what it needs first).
.PHONY: run test bench bench-quick

run:
	tools/run-backend

test:
	tools/run-tests

bench:
	tools/run-bench

bench-quick:
	tools/run-bench --quick
