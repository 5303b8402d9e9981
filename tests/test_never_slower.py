"""Never slower without saying so (issue 21, item 4): a run whose final latency, measured or predicted, is worse
than the original's says SLOWER on the summary line, in the report's notes and in the report banner, whatever
the budget."""
from __future__ import annotations

from edge_compress.compress.passes.measure import slower_notes
from edge_compress.compress.report.html import render_html
from edge_compress.compress.report.summary import summary_line
from edge_compress.compress.search.budget import Metrics

MEASURED = "measured: median of 57 runs after 20 warm-up, onnxruntime, CPUExecutionProvider, 1 thread(s)"
PREDICTED = "predicted: per-layer roofline cost model of profile raspberry-pi-4"


def _metrics(ms: float, macs: int, kind: str = MEASURED) -> Metrics:
    return Metrics(ms, kind, 1.0, macs, 1000)


def test_a_met_macs_budget_with_a_slower_model_says_slower_everywhere():
    """The issue's case: 80.3 M -> 39.6 M MACs, 3.37 -> 3.75 ms measured, MACs budget met."""
    original, final = _metrics(3.37, 80_300_000), _metrics(3.75, 39_600_000)
    budget = {"macs": 40_150_000}
    line = summary_line("met", original.to_dict(), final.to_dict(), budget)
    assert line.startswith("MET:") and "SLOWER: 1.11x the original's time" in line
    notes = slower_notes(original, final)
    assert len(notes) == 1 and notes[0].startswith("SLOWER:") and "measured" in notes[0] and "1.11x" in notes[0]


def test_a_predicted_slowdown_is_reported_too_and_a_faster_model_is_not():
    assert slower_notes(_metrics(2.0, 10, PREDICTED), _metrics(2.2, 5, PREDICTED))[0].count("predicted") == 1
    assert slower_notes(_metrics(3.75, 10), _metrics(3.37, 5)) == ()


def test_the_report_banner_warns_when_the_final_model_is_slower():
    report = {"verdict": "met", "budget": {"macs": 40_150_000},
              "original": {**_metrics(3.37, 80_300_000).to_dict(), "latency_stats": None},
              "final": {**_metrics(3.75, 39_600_000).to_dict(), "latency_stats": None}}
    banner = render_html(report).split('id="verdict"', 1)[1].split("<h2", 1)[0]
    assert "SLOWER" in banner and "1.11x" in banner
    report["final"]["latency_ms"] = 3.0
    assert "SLOWER" not in render_html(report).split('id="verdict"', 1)[1].split("<h2", 1)[0]
