"""``arch ui``: the registry in a browser. Read-only pages over the registry's library calls.

Every page is server-rendered HTML (usable without JavaScript) with a JSON endpoint beside it
for scripts; both are built from the calls ``arch runs`` makes (``Registry.runs``,
``archlab.registry.views``), never from SQL of their own. The web layer imports no torch, no
compiler and no runners (an import-linter contract), so a page answers at once.

Layout:

- ``app.py``: ``create_app(registry_url, token=, host=)``, the Starlette application: the
  registry opened once (never created, never written), the templates, the static files, the
  error pages and the security middleware;
- ``security.py``: the middleware every request passes: 405 for every method but GET and HEAD,
  the Host check against DNS rebinding on loopback, the token, the response headers (CSP etc.);
- ``context.py``: what a page module uses: ``web(request)`` (the registry and templates),
  ``render``, ``json_response``, ``problem`` (an error as a page or as JSON) and ``page_url``;
- ``format.py``: numbers and values as text (the Jinja filters);
- ``charts.py``: the charts ``static/curves.js`` draws (a chart per metric family, a series
  per run and metric), as the JSON endpoints describe them;
- ``pages/``: one module per page (runs, run, group, compare, pictures), each with a
  ``ROUTES`` list; ``pages/__init__.py`` joins them. A new page is one module there (its
  routes, its template in ``templates/``) and one line in ``pages.PAGES``;
- ``templates/``: Jinja2, autoescaped; ``base.html`` holds the navigation;
- ``static/``: our CSS and scripts, and uPlot (MIT) under ``static/vendor/uplot`` (no CDN: the
  pages work offline). Scripts live only there: the Content-Security-Policy allows no inline
  script.
"""
