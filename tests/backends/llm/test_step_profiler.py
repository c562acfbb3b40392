"""The engine's step profiler: a window of steps profiled while serving, turned on by the server's environment."""

import multiprocessing

import pytest

from modelgate.backends.llm import parallel
from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import EngineFailed, receive_from_engine
from modelgate.backends.llm.engine_process import engine_main
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.step_counts import StepCounts
from modelgate.backends.llm.step_profiler import DEFAULT_STEPS, PROFILE_DIR, PROFILE_STEPS, StepProfiler
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint

CONFIG = EngineConfig(device="cpu", num_kv_blocks=64, block_size=4, max_model_len=256, show_progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_the_environment_turns_it_on_and_sets_its_window(tmp_path):
    counts = StepCounts()
    assert StepProfiler.from_environment(counts, {}) is None
    assert StepProfiler.from_environment(counts, {PROFILE_DIR: ""}) is None
    default = StepProfiler.from_environment(counts, {PROFILE_DIR: str(tmp_path)})
    assert (default.folder, default.first_step, default.num_steps) == (tmp_path, *DEFAULT_STEPS)
    window = StepProfiler.from_environment(counts, {PROFILE_DIR: str(tmp_path), PROFILE_STEPS: "7:3"})
    assert (window.first_step, window.num_steps) == (7, 3)


@pytest.mark.parametrize("steps", ["seven:3", "7:x", "7:0", "-1:5"])
def test_a_bad_window_is_an_error_naming_the_variable(tmp_path, steps):
    with pytest.raises(ValueError, match=PROFILE_STEPS):
        StepProfiler.from_environment(StepCounts(), {PROFILE_DIR: str(tmp_path), PROFILE_STEPS: steps})


def _serve_steps(engine, profiler, num_requests=3, max_tokens=8):
    for index in range(num_requests):
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        engine.add_request(f"r{index}", [5 + index, 6, 7, 8], sampling)
    while engine.has_unfinished:
        profiler.before_step()
        engine.step()
        profiler.after_step()


def test_the_window_of_steps_is_profiled_and_written_once(checkpoint, tmp_path):
    engine = LLMEngine(checkpoint, CONFIG)
    profiler = StepProfiler(tmp_path / "profiles", 2, 3, engine.step_counts)
    _serve_steps(engine, profiler)
    assert engine.step_counts.steps > 5 and profiler.is_done
    [written] = (tmp_path / "profiles").iterdir()
    assert written == profiler.written and written.name.endswith("-steps2-4.txt")
    text = written.read_text()
    # The window's three steps by kind (the first step computes the prompts, then decodes), then the ops table.
    assert text.startswith("engine steps 2 to 4: steps 3, decode 3, launched ahead 0; decode steps ")
    assert "aten::" in text and "Self CPU" in text


def test_a_folder_it_cannot_write_leaves_the_engine_serving(checkpoint, tmp_path, caplog):
    engine = LLMEngine(checkpoint, CONFIG)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    profiler = StepProfiler(blocked, 0, 2, engine.step_counts)
    _serve_steps(engine, profiler, num_requests=1, max_tokens=4)
    assert profiler.is_done and not engine.has_unfinished
    assert "could not write the engine profile" in caplog.text


def test_the_engine_process_refuses_to_start_with_a_bad_window(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(PROFILE_DIR, str(tmp_path))
    monkeypatch.setenv(PROFILE_STEPS, "ten")
    monkeypatch.setattr(parallel, "report_start_failure", None)  # engine_main sets it: restored after the test
    inbox_reader, _ = multiprocessing.Pipe(duplex=False)
    outbox_reader, outbox_writer = multiprocessing.Pipe(duplex=False)
    engine_main(str(checkpoint), CONFIG.model_dump_json(), inbox_reader, outbox_writer)  # returns: it did not start
    failed = receive_from_engine(outbox_reader)
    assert isinstance(failed, EngineFailed) and PROFILE_STEPS in failed.message
