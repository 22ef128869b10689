"""``python -m kiln.supervisor``: supervise this home's kiln server (``kiln up`` runs this)."""

from kiln.supervisor.parent import main

main()
