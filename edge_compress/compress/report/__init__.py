"""report.json and report.html: the typed report (model), its one builder (build), the JSON Schema generated
from the types (schema), the HTML page from Jinja2 templates (html, svg), and the numbers-for-people helpers
(units, summary) the console summary shares with the page."""
