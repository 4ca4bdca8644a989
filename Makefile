.PHONY: serve test
# Install and serve the dashboard on the embedded demo: http://localhost:5006/app
# (server options through ARGS, e.g. make serve ARGS="--port 5007")
serve:
	bash scripts/serve.sh $(ARGS)
# Install and run the whole test suite (unit, slow and headless-browser tests)
test:
	bash scripts/test.sh
