"""Runners: every way of measuring a model behind one ``Runner`` interface, chosen by ``make_runner``."""
