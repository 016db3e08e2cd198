"""moshi-rocm selftest [--device NAME] [--keep DIR]

Makes a tiny Moshi TTS, STT and Mimi with random weights in a temporary
folder (moshi_rocm.tinymodel, standard library only: nothing to install),
then runs the bundled moshi-tts and moshi-stt on it on the best device
(ROCm0 when the GPU is usable, else CPU), the same way the console scripts
run them, and prints the frames per second of each. The speech is noise:
the weights are random; what is tested is that every stage loads and runs.

  --device NAME   run on this ggml device (e.g. ROCm0, CPU) instead of the best one
  --keep DIR      write the models and outputs to DIR and keep them

This file is part of the wheel template: keep it importable on Python 3.9.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import List, Optional, Sequence

from ._launcher import LauncherError, code_summary, prepare, runtime_info

TEXT = "The quick brown fox jumped over the sleeping dog."
TIMEOUT = 900  # seconds per tool run; a tiny model takes seconds even on a CPU
_FRAME_RATE = re.compile(r"frame rate:\s*([0-9.]+) frames/s")
_FRAME_COUNT = re.compile(r"frame count:\s*([0-9]+) frames")
_DEVICE = re.compile(r'using device: "([^"]+)"')


class SelftestError(Exception):
    """A step of the selftest failed; the message says which and shows the tool's last lines."""


def run_tool(tool: str, args: Sequence[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a bundled tool with the environment its console script gives it (_launcher.prepare)."""
    exe, argv, env = prepare(tool, list(args))
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, errors="replace", timeout=timeout)


def list_devices() -> List[str]:
    """ggml's device names as `moshi-tts -l` lists them (it prints to stderr and exits 1)."""
    r = run_tool("moshi-tts", ["-l"], timeout=120)
    return re.findall(r'^\s*"([^"]+)"\s*$', r.stderr + r.stdout, flags=re.MULTILINE)


def best_device(devices: Sequence[str]) -> str:
    for name in devices:
        if name.startswith("ROCm"):
            return name
    return "CPU"


def _tail(r: subprocess.CompletedProcess, lines: int = 15) -> str:
    text = (r.stdout or "") + (r.stderr or "")
    return "\n".join(text.strip().splitlines()[-lines:])


def _checked(tool: str, args: Sequence[str]) -> str:
    start = time.monotonic()
    r = run_tool(tool, args)
    if r.returncode != 0:
        raise SelftestError(f"{tool} failed (exit {r.returncode}); its last lines:\n{_tail(r)}")
    out = (r.stdout or "") + (r.stderr or "")
    if not _FRAME_RATE.search(out):
        raise SelftestError(f"{tool} printed no frame rate; its last lines:\n{_tail(r)}")
    print(f"  {tool}: done in {time.monotonic() - start:.1f} s")
    return out


def _number(pattern, text: str) -> float:
    m = pattern.search(text)
    return float(m.group(1)) if m else float("nan")


def run_selftest(workdir: Path, device: Optional[str] = None) -> dict:
    """Make the tiny models in `workdir`, run TTS then STT on them; return what was measured."""
    from . import tinymodel
    if device is None:
        device = best_device(list_devices())
    print(f"device: {device}")
    start = time.monotonic()
    files = tinymodel.write_models(workdir / "models", "tiny")
    print(f"  tiny models written in {time.monotonic() - start:.1f} s")
    wav = workdir / "selftest.wav"
    tts = _checked("moshi-tts", ["-r", str(files.root), "-d", device, "--bench", "-o", str(wav), TEXT])
    with wave.open(str(wav), "rb") as w:
        seconds = w.getnframes() / float(w.getframerate())
    if seconds <= 0:
        raise SelftestError(f"moshi-tts wrote an empty {wav}")
    stt = _checked("moshi-stt", ["-r", str(files.root), "-d", device, "-i", str(wav)])
    used = _DEVICE.search(tts + stt)
    return {"device": used.group(1) if used else device,
            "audio_seconds": seconds,
            "tts_frames": int(_number(_FRAME_COUNT, tts)), "tts_fps": _number(_FRAME_RATE, tts),
            "stt_frames": int(_number(_FRAME_COUNT, stt)), "stt_fps": _number(_FRAME_RATE, stt)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moshi-rocm selftest", description=__doc__.split("\n\n")[1])
    parser.add_argument("--device", help="ggml device name (default: ROCm0 if usable, else CPU)")
    parser.add_argument("--keep", type=Path, help="keep the models and outputs in this folder")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        info = runtime_info()
        print(f"moshi-rocm selftest: {info.get('distribution', '?')} {info.get('version', '?')} "
              f"{code_summary(info)}")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            result = run_selftest(args.keep, args.device)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="moshi-rocm-selftest-"))
            try:
                result = run_selftest(tmp, args.device)
            finally:
                shutil.rmtree(str(tmp), ignore_errors=True)
    except (SelftestError, LauncherError) as e:
        print(f"moshi-rocm selftest: FAILED: {e}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as e:
        print(f"moshi-rocm selftest: FAILED: {e.cmd[0]} did not finish in {e.timeout:.0f} s", file=sys.stderr)
        return 1
    print(f"device used: {result['device']}")
    print(f"TTS: {result['tts_frames']} frames ({result['audio_seconds']:.2f} s of audio) at "
          f"{result['tts_fps']:.1f} frames/s")
    print(f"STT: {result['stt_frames']} frames at {result['stt_fps']:.1f} frames/s")
    print("(tiny random model: the speed of the code paths, not of a real model; "
          "real time is 12.5 frames/s)")
    print("selftest passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
