"""The router: NGINX's routes (rendered config, reloaded) and peers (pushed live, no reload).

See README.md in this directory for the pipeline and the words.
"""

from kiln.router.base import Router
from kiln.router.fake import FakeRouter
from kiln.router.nginx import AdminStatus, NginxRouter
from kiln.router.render import render_nginx_conf

__all__ = ["AdminStatus", "FakeRouter", "NginxRouter", "Router", "render_nginx_conf"]
