"""kiln's command line (``kiln``); see ``kiln.cli.main``."""
