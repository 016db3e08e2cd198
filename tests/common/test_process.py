"""builder/common/process.py: one runner, one log format, one tail length."""

import sys

import pytest

from builder.common import process
from builder.errors import BuildStepError, ToolchainError


def test_output_is_appended_to_the_log_and_seen_line_by_line(tmp_path):
    log = tmp_path / "step.log"
    log.write_text("earlier\n")
    seen = []
    code = process.run_logged([sys.executable, "-c", "print('a'); import sys; print('b', file=sys.stderr)"], log,
                              cwd=tmp_path, on_line=seen.append)
    assert code == 0 and seen == ["a\n", "b\n"]
    text = log.read_text()
    assert text.startswith("earlier\n\n$ ") and f"(cwd {tmp_path})\na\nb\n" in text


def test_a_failure_shows_the_last_lines_and_the_logs_path(tmp_path):
    log = tmp_path / "step.log"
    with pytest.raises(ToolchainError) as e:
        process.check_logged([sys.executable, "-c", "for i in range(100): print(i)\nraise SystemExit(3)"], log,
                             "counting", error=ToolchainError)
    message = str(e.value)
    assert message.startswith(f"counting failed (exit 3); last {process.LOG_TAIL_LINES} lines of the log:\n")
    assert "\n99\n" in message and "\n69\n" not in message and "\n70\n" in message
    assert message.endswith(f"full log: {log}")


def test_failure_names_the_kept_log_context_and_a_hint(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("one\ntwo")
    message = process.failure("mmdebstrap", 1, log, tmp_path / "kept.log", "see stacks.toml", context="creating it")
    assert message == ("mmdebstrap failed (exit 1) creating it; last 30 lines of the log:\none\ntwo\n"
                       f"full log: {tmp_path / 'kept.log'}; see stacks.toml")


def test_the_child_is_stopped_when_the_caller_is_interrupted(tmp_path):
    log = tmp_path / "x.log"
    pid_file = tmp_path / "pid"

    def interrupt(line):
        raise KeyboardInterrupt

    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('go', flush=True); time.sleep(60)"
    with pytest.raises(KeyboardInterrupt):
        process.run_logged([sys.executable, "-c", script], log, on_line=interrupt, stop_timeout=5)
    import os
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "go" in log.read_text()


def test_build_step_error_is_the_default(tmp_path):
    with pytest.raises(BuildStepError, match="false failed"):
        process.check_logged(["false"], tmp_path / "l.log", "false")
