"""A model version's LLM series outlive the instance a reload replaced: counted per instance, dropped with the
last one."""

from modelgate.backends.llm import llm_metrics
from modelgate.core.backend_metrics import BACKEND_METRICS

LABELS = ("series_test_model", "7")


def _generated() -> float | None:
    return BACKEND_METRICS.get_sample_value(
        "modelgate_llm_generation_tokens_total", {"model": LABELS[0], "version": LABELS[1]}
    )


def test_series_stay_while_an_instance_uses_them_and_go_with_the_last():
    llm_metrics.publish_zeros(LABELS)  # the serving instance
    series = llm_metrics.VersionSeries(LABELS)
    llm_metrics.publish_zeros(LABELS)  # a reload's new instance
    llm_metrics.forget(LABELS)  # the old one unloads
    series.generation_tokens.inc(3)
    assert _generated() == 3.0
    llm_metrics.forget(LABELS)
    assert _generated() is None
