"""The GitHub Actions workflow in ci/github/workflows/: linted by actionlint, and held to the
README's commands and to what `moshi-build matrix` really prints."""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from builder.cli import all_cmd

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "ci" / "github" / "workflows" / "wheels.yml"
README = REPO / "README.md"
BIN = Path(sys.executable).parent  # where the test extra's console scripts are installed


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert path, f"{name} is missing: install the test extra (python3 -m pip install --editable '.[test]')"
    return str(path)


def actionlint(path: Path) -> subprocess.CompletedProcess:
    # shellcheck from the test extra checks every run: script; put it where actionlint looks.
    env = {**os.environ, "PATH": f"{Path(tool('shellcheck')).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([tool("actionlint"), "-no-color", "-verbose", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)


def workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, None) or wf["on"]  # YAML 1.1 reads the key `on` as true
    return wf


def readme_block_after(heading_text: str) -> str:
    """The first fenced block after the paragraph that contains `heading_text`."""
    text = README.read_text()
    start = text.index(heading_text)
    block = re.search(r"```\n(.*?)```", text[start:], re.S)
    return block.group(1).strip()


def steps_running(job: dict, word: str) -> list[dict]:
    return [s for s in job["steps"] if word in s.get("run", "")]


def test_workflow_passes_actionlint():
    r = actionlint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ""
    assert "shellcheck" not in r.stderr  # not reported as disabled: run: scripts were checked


@pytest.mark.parametrize("old, new, complaint", [
    # a job that needs one that does not exist
    ("    needs: verify\n", "    needs: verfy\n", "job-needs"),
    # an output the matrix job does not have
    ("needs.matrix.outputs.matrix", "needs.matrix.outputs.matrx", "expression"),
    # an unquoted expansion in a run: script
    ('--gpu-targets "$GPU_TARGET"', "--gpu-targets $GPU_TARGET", "shellcheck"),
])
def test_actionlint_rejects_a_broken_copy(tmp_path, old, new, complaint):
    text = WORKFLOW.read_text()
    assert old in text
    broken = tmp_path / "wheels.yml"
    broken.write_text(text.replace(old, new))
    r = actionlint(broken)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"[{complaint}]" in r.stdout


def test_setup_steps_are_the_readme_setup_command():
    setup = readme_block_after("Set-up (installs")
    jobs = workflow()["jobs"]
    for name in ("matrix", "base", "wheel", "verify", "pages"):
        (step,) = [s for s in jobs[name]["steps"] if s.get("name") == "Set up (README)"]
        assert step["run"].strip() == setup


# What the CI command may add to or leave out of the README's: which wheels, where GitHub
# cannot be reached, and the progress bars.
CI_ONLY_PARAMS = {"gpu_targets", "wheel_set", "mirrors", "source_overrides", "no_progress", "build_number",
                  "check_reproducible"}


@pytest.mark.parametrize("job_name, wheel_set, gpu_target", [
    # the shared wheel once; any one target of the matrix satisfies --gpu-targets
    ("base", "base", "${{ fromJSON(needs.matrix.outputs.matrix).include[0].gpu_target }}"),
    # a matrix job per target: its target wheel only
    ("wheel", "targets", "${{ matrix.gpu_target }}"),
])
def test_wheel_jobs_run_the_readme_main_command_as_root(job_name, wheel_set, gpu_target):
    """The README's main command makes the base and the target wheels (--wheels all); CI runs
    that same command split in two: --wheels base once, --wheels targets per matrix entry."""
    main_command = shlex.split(readme_block_after("Main job (fetch"))
    job = workflow()["jobs"][job_name]
    assert job["needs"] == "matrix"
    assert ("strategy" in job) == (job_name == "wheel")  # the base wheel is made once
    (step,) = steps_running(job, "moshi-build --gpu-targets")
    argv = shlex.split(step["run"])
    # the Debian build environment needs root; PATH keeps the set-up's moshi-build
    assert argv[:4] == ["sudo", "-E", "env", "PATH=$PATH"]
    argv = argv[4:]
    assert argv[:2] == main_command[:2] == ["moshi-build", "--gpu-targets"]
    assert argv[2] == "$GPU_TARGET" and step["env"]["GPU_TARGET"] == gpu_target
    # Both are the bare form, which runs `all`: its parser accepts them (nothing is run).
    # every job of a run numbers its wheels alike: the target wheels require the base of their version
    assert step["env"]["BUILD_NUMBER"] == "${{ github.run_number }}"
    ci = all_cmd.make_context("all", [a.replace("$GPU_TARGET", "gfx1100").replace("$BUILD_NUMBER", "7")
                                      for a in argv[1:]])
    readme = all_cmd.make_context("all", main_command[1:])
    assert ci.params["gpu_targets"] == "gfx1100"
    assert readme.params["gpu_targets"] == "gfx1100;gfx1030"
    assert readme.params["wheel_set"] == "all"
    assert ci.params["wheel_set"] == wheel_set
    # Otherwise the same command: same options, or the defaults the README leaves them at.
    assert set(ci.params) == set(readme.params)
    assert ({k: v for k, v in ci.params.items() if k not in CI_ONLY_PARAMS}
            == {k: v for k, v in readme.params.items() if k not in CI_ONLY_PARAMS})
    assert ci.params["out_dir"] == Path("wheelhouse")
    assert ci.params["build_number"] == 7 and readme.params["build_number"] == 0
    # every wheel CI publishes was built twice and came out byte-identical (docs/REPRODUCIBLE.md)
    assert ci.params["check_reproducible"] is True
    upload = [s for s in job["steps"]
              if s.get("uses", "").startswith("actions/upload-artifact@") and "if" not in s]
    assert upload[0]["with"]["path"] == f"{ci.params['out_dir']}/*.whl"


def test_verify_and_publishing_see_every_wheel_artifact():
    """Every wheel artifact of the base and wheel jobs is downloaded into one wheelhouse, and
    verify checks them all there (a target wheel finds its base beside it)."""
    jobs = workflow()["jobs"]
    uploads = {}
    for name in ("base", "wheel"):
        (upload,) = [s for s in jobs[name]["steps"]
                     if s.get("uses", "").startswith("actions/upload-artifact@") and "if" not in s]
        uploads[name] = upload["with"]["name"]
    assert uploads == {"base": "wheel-base", "wheel": "wheel-${{ matrix.gpu_target }}"}
    assert sorted(jobs["verify"]["needs"]) == ["base", "wheel"]
    assert "if" not in jobs["verify"]  # every run checks the set, not only tags
    for name in ("verify", "pypi", "pages"):
        (download,) = [s for s in jobs[name]["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
        pattern = download["with"]["pattern"]
        for artifact in ("wheel-base", "wheel-gfx1100", "wheel-gfx1030"):
            assert fnmatch.fnmatchcase(artifact, pattern), (name, artifact)
        assert not fnmatch.fnmatchcase("logs-gfx1100", pattern)
        assert download["with"]["path"] == "wheelhouse" and download["with"]["merge-multiple"] is True
    (verify,) = steps_running(jobs["verify"], "moshi-build verify")
    argv = shlex.split(verify["run"].replace("\\\n", " "))
    assert argv[:4] == ["sudo", "-E", "env", "PATH=$PATH"]   # the floor's clean root needs root
    argv = argv[4:]
    assert argv[:3] == ["moshi-build", "verify", "wheelhouse/*.whl"]
    assert argv[3::2] == ["--build-path"] * len(argv[3::2])  # nothing but more build paths
    (installs,) = steps_running(jobs["verify"], "moshi-build install-check")
    assert "--gpu-target" in installs["run"] and "wheelhouse/moshi_rocm_gfx*.whl" in installs["run"]


def test_actions_are_pinned_to_commits():
    uses = re.findall(r"uses:\s*(\S+)", WORKFLOW.read_text())
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref


def test_matrix_step_output_is_the_matrix_the_wheel_job_reads(tmp_path):
    """Run the matrix step's own script with the real moshi-build, as GitHub would."""
    wf = workflow()
    job = wf["jobs"]["matrix"]
    (step,) = steps_running(job, "moshi-build matrix")
    assert job["outputs"]["matrix"] == f"${{{{ steps.{step['id']}.outputs.matrix }}}}"
    default = wf["on"]["workflow_dispatch"]["inputs"]["families"]["default"]
    # a tag push has no inputs: its fallback is the dispatch default
    assert step["env"]["FAMILIES"] == f"${{{{ inputs.families || '{default}' }}}}"

    wheel_text = yaml.safe_dump(wf["jobs"]["wheel"])
    used_keys = set(re.findall(r"(?<![\w.])matrix\.(\w+)", wheel_text))  # not needs.matrix.*
    assert "gpu_target" in used_keys

    def run_step(gpu_targets: str, families: str) -> dict:
        output = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        output.touch()
        env = {**os.environ, "GITHUB_OUTPUT": str(output), "GPU_TARGETS": gpu_targets, "FAMILIES": families,
               "PATH": f"{Path(tool('moshi-build')).parent}{os.pathsep}{os.environ['PATH']}"}
        r = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        (line,) = output.read_text().splitlines()
        name, _, value = line.partition("=")
        assert name == "matrix"
        return json.loads(value)

    for matrix in (run_step("", default), run_step("gfx1100;gfx1030", "")):
        assert matrix["include"]
        for entry in matrix["include"]:
            assert used_keys <= set(entry), f"the wheel job reads matrix keys {used_keys - set(entry)} not given"
    families = run_step("", default)
    assert {"gfx1100", "gfx1030"} <= {e["gpu_target"] for e in families["include"]}
    assert [e["gpu_target"] for e in run_step("gfx1030", default)["include"]] == ["gfx1030"]


def test_publishing_runs_only_for_tags_with_the_permissions_it_needs():
    jobs = workflow()["jobs"]
    assert workflow()["permissions"] == {"contents": "read"}
    for name in ("pypi", "pages"):
        assert jobs[name]["if"] == "startsWith(github.ref, 'refs/tags/')"
        assert jobs[name]["needs"] == "verify"
        assert jobs[name]["permissions"]["id-token"] == "write"
    assert jobs["pypi"]["environment"]["name"] == "pypi"
    assert jobs["pages"]["permissions"]["pages"] == "write"
    (publish,) = [s for s in jobs["pypi"]["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert "repository-url" not in publish.get("with", {})  # the action's default registry
    (index,) = steps_running(jobs["pages"], "moshi-build index")
    assert shlex.split(index["run"])[:5] == ["moshi-build", "index", "wheelhouse", "--out", "site"]
    (pages_upload,) = [s for s in jobs["pages"]["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert pages_upload["with"]["path"] == "site"


def test_publishing_checks_run_in_verify_before_any_upload(tmp_path):
    """publish-check (size limit, twine check) runs in job verify, which both publish jobs need:
    one failing wheel stops the run before anything is uploaded."""
    from builder.cli import publish_check_cmd

    jobs = workflow()["jobs"]
    (step,) = steps_running(jobs["verify"], "moshi-build publish-check")
    argv = shlex.split(step["run"])
    assert argv[:3] == ["moshi-build", "publish-check", "wheelhouse/*.whl"]
    wheel = tmp_path / "moshi_rocm-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    ctx = publish_check_cmd.make_context("publish-check", [str(wheel)] + argv[3:])
    assert ctx.params["twine"] is True and ctx.params["max_size"] == "100MB"
    for name in ("pypi", "pages"):
        assert jobs[name]["needs"] == "verify"
