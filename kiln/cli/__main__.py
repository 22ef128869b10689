from kiln.cli.main import app

app()
