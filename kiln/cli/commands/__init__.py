"""The CLI's commands, one module per topic; ``kiln.cli.main`` wires them into one app."""
