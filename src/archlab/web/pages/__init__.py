"""The pages of ``arch ui``: one module per page, each with a ``ROUTES`` list of its HTML page
and the JSON endpoint beside it (``/api/...``), joined here in ``PAGES`` order.

Adding a page: write ``pages/NAME.py`` with ``ROUTES = [Route(...), ...]`` (name each route, so
other pages can link to it with ``page_url(request, name, ...)``, which gives None while the page
does not exist), its template in ``templates/`` extending ``base.html``, and add the module to
``PAGES``. Route names in use: ``runs``, ``api_runs``, ``run``, ``api_run``, ``api_run_metrics``,
``artifact`` (``run``); ``group``, ``api_group`` (``group``, a CV group: ``group_id``);
``compare``, ``api_compare`` (``compare``); ``pictures``, ``api_pictures``, ``run_pictures``,
``api_run_pictures`` (``pictures``). The navigation links ``compare`` and ``pictures``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from archlab.web.pages import compare, group, pictures, run, runs

PAGES = (runs, run, group, compare, pictures)
ROUTES: list[BaseRoute] = [route for page in PAGES for route in page.ROUTES]
