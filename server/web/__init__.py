"""The web console (issue 14): server-rendered pages in Simplified Chinese for the bureau,
unit clerks, canteen operators, auditors and diners, over the same services the API uses.

:mod:`server.web.site` wires it into the app; each page module owns one blueprint made by
:func:`server.web.blueprint.web_blueprint`. See the README's "Web console" section.
"""
