"""The clinician web app: sign-in, campaigns, the comparison screen, agreement, adjudication, export.

A thin shell over the stages (DESIGN.md rule 3): routes parse forms, call one domain function from
``annotate``, ``preferences`` or ``accounts``, and render a server-side Jinja2 page. It runs on the
same store as the CLI (settings from the environment) and migrates it on start.

``app.py`` builds the application (``create_app``); ``pages.py`` holds what every page shares;
``routes/`` one module per role's pages; ``security.py`` sessions, CSRF and roles; ``oidc.py``
single sign-on; ``server.py`` runs it under uvicorn.
"""
