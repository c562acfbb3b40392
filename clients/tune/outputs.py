"""The files a tune run leaves in its output folder (besides tune_log.jsonl and candidates/<id>/):

- config.pbtxt: the model's config with the chosen settings, as protobuf text format (comments on top say
  what was chosen and how), when there is a choice;
- candidates.csv and report.txt: the table of every candidate, and the verdict;
- tune.png: throughput against latency per candidate (without matplotlib: a note instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from modelgate.clients.tune.candidate import Candidate
from modelgate.clients.tune.candidate_config import chosen_config
from modelgate.clients.tune.choose import Choice, Targets
from modelgate.clients.tune.measurement import Measurement
from modelgate.clients.tune.model_folder import ModelFolder
from modelgate.clients.tune.plot import PLOT_NAME, write_plot
from modelgate.clients.tune.report import CSV_NAME, format_table, rows, setting_names, summary_lines, write_csv

CONFIG_NAME = "config.pbtxt"
REPORT_NAME = "report.txt"


@dataclass
class Outputs:
    table: str
    summary: list[str]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_outputs(
    folder: Path,
    model: ModelFolder,
    measurements: list[Measurement],
    names: list[str],
    targets: Targets,
    choice: Choice | None,
    baseline: Candidate,
    device: str | None,
    plots: bool = True,
) -> Outputs:
    folder.mkdir(parents=True, exist_ok=True)
    names = setting_names(measurements, names)
    table_rows = rows(measurements, names, targets, choice)
    baseline_measurement = next((m for m in measurements if m.key == baseline.key), None)
    outputs = Outputs(format_table(table_rows), summary_lines(choice, baseline_measurement, targets))
    if choice is not None:
        outputs.files.append(_write_config(folder / CONFIG_NAME, model, choice, targets, device))
    write_csv(folder / CSV_NAME, measurements, names, targets, choice)
    (folder / REPORT_NAME).write_text(outputs.table + "\n\n" + "\n".join(outputs.summary) + "\n")
    outputs.files += [folder / CSV_NAME, folder / REPORT_NAME]
    if plots and measurements:
        try:
            title = f"modelgate tune: {model.name}, {targets.describe()}"
            outputs.files.append(write_plot(folder / PLOT_NAME, measurements, targets, choice, baseline.key, title))
        except ImportError:
            outputs.notes.append("matplotlib is not installed (pip install 'modelgate[bench]'): no tune.png")
    return outputs


def _write_config(path: Path, model: ModelFolder, choice: Choice, targets: Targets, device: str | None) -> Path:
    chosen = choice.measurement
    candidate = Candidate(tuple(sorted(chosen.overrides.items())), tuple(sorted(chosen.settings.items())))
    config = chosen_config(model, candidate, device)
    header = [
        f"# modelgate tune: {model.config_file} with {candidate.label}",
        f"# {choice.reason}" if choice.meets_targets else f"# WARNING: {choice.reason}",
        f"# measured: {chosen.output_tok_s:.1f} output tok/s, TTFT p99 {chosen.ttft_p99_ms or 0:.1f} ms, "
        f"ITL p99 {chosen.itl_p99_ms or 0:.1f} ms ({targets.describe()})",
    ]
    path.write_text("\n".join(header) + "\n" + text_format.MessageToString(config))
    return path
