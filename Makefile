.PHONY: serve test
# Install and serve the dashboard on the embedded demo: http://localhost:5006/app
serve:
	bash scripts/serve.sh
# Install and run the whole test suite (unit, slow and headless-browser tests)
test:
	bash scripts/test.sh
