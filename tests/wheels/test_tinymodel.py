"""Random-weight Moshi models (wheels/src/moshi_rocm/tinymodel.py) and the real tools run on them.

Fast tests check the generator's files on their own: safetensors headers
parsed by the safetensors package, shapes and dtypes against the configs,
the tokenizer loaded by the sentencepiece package, and the real-size
inventory against the sizes of the published files. The slow tests need the
real moshi.cpp (MOSHI_BUILD_MOSHI_CPP_SOURCE=DIR, like
tests/test_pipeline.py): its wheel is installed into the clean root
filesystem and its tools are run on the tiny model, CPU only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
safetensors = pytest.importorskip("safetensors")
spm = pytest.importorskip("sentencepiece")

# The generator lives in the wheel's package (moshi-rocm selftest runs it on users' machines).
WHEEL_SRC = Path(__file__).resolve().parents[2] / "wheels" / "src"
sys.path.insert(0, str(WHEEL_SRC))
from moshi_rocm import tinymodel  # noqa: E402

from tests.helpers.slow import SHARED_CACHE, fetch_options  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tinymodel.ModelFiles:
    return tinymodel.write_models(tmp_path_factory.mktemp("tiny") / "models", "tiny", seed=7)


def header(path: Path) -> dict:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def inventory(tensors) -> dict:
    return {t.name: (list(t.shape), t.dtype) for t in tensors}


def test_safetensors_files_parse_and_hold_exactly_the_inventory(tiny):
    from safetensors import safe_open

    tts, stt, mimi = tinymodel.dims("tiny")
    cases = [(tiny.root / tinymodel.TTS_DIR / tinymodel.TTS_MODEL, tinymodel.lm_tensors(tts)),
             (tiny.root / tinymodel.STT_DIR / tinymodel.STT_MODEL, tinymodel.lm_tensors(stt)),
             (tiny.mimi, tinymodel.mimi_tensors(mimi)),
             (tiny.voice, tinymodel.voice_tensors(tts))]
    for path, tensors in cases:
        with safe_open(str(path), framework="numpy") as f:  # the reference parser validates offsets and size
            found = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}
        assert found == inventory(tensors), path.name
        assert header(path)["__metadata__"] == {"format": "pt"}


def test_values_are_random_finite_and_scaled(tiny):
    from safetensors.numpy import load_file

    weights = load_file(str(tiny.mimi))  # F32 only: numpy has no bfloat16
    w = weights["decoder_transformer.transformer.layers.0.self_attn.in_proj_weight"]
    assert np.isfinite(w).all() and abs(float(w.std()) - 1 / np.sqrt(512)) < 0.005
    assert (weights["encoder_transformer.transformer.layers.3.norm1.weight"] == 1).all()
    assert (weights["quantizer.rvq_rest.vq.layers.30._codebook.cluster_usage"] == 1).all()
    a, b = (weights[f"quantizer.rvq_rest.vq.layers.{i}._codebook.embedding_sum"] for i in (0, 1))
    assert not np.array_equal(a, b)


def test_bf16_values_round_trip_through_the_encoding(tiny):
    path = tiny.root / tinymodel.TTS_DIR / tinymodel.TTS_MODEL
    h = header(path)
    start, end = h["out_norm.alpha"]["data_offsets"]
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + length + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    values = (raw.astype(np.uint32) << 16).view(np.float32)
    assert (values == 1.0).all() and values.size == 2048


def test_configs_agree_with_the_tensors_and_the_tokenizer(tiny):
    tts_cfg = json.loads(tiny.tts_config.read_text())
    stt_cfg = json.loads(tiny.stt_config.read_text())
    tts_h = header(tiny.root / tinymodel.TTS_DIR / tts_cfg["moshi_name"])
    stt_h = header(tiny.root / tinymodel.STT_DIR / stt_cfg["moshi_name"])
    mimi_h = header(tiny.root / tinymodel.TTS_DIR / tts_cfg["mimi_name"])
    vocab = spm.SentencePieceProcessor(model_file=str(tiny.tokenizer)).get_piece_size()
    for cfg, h in ((tts_cfg, tts_h), (stt_cfg, stt_h)):
        dim, card, n_q = cfg["dim"], cfg["card"], cfg["n_q"]
        assert len(cfg["delays"]) == n_q + 1
        assert sorted(k for k in h if re.fullmatch(r"emb\.\d+\.weight", k)) == [f"emb.{i}.weight" for i in range(n_q)]
        assert h["emb.0.weight"]["shape"] == [card + 1, dim]
        # moshi-stt prints IdToPiece of whatever the LM emits: every text id must be a piece
        assert h["text_linear.weight"]["shape"] == [cfg["text_card"], dim] and cfg["text_card"] == vocab
        assert h["transformer.layers.0.self_attn.in_proj_weight"]["shape"] == [3 * dim, dim]
        assert f"transformer.layers.{cfg['num_layers'] - 1}.norm2.alpha" in h
        assert dim % cfg["num_heads"] == 0
        # Mimi's codebooks decide which audio tokens exist; the LM embeds and predicts exactly those
        assert mimi_h["quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"]["shape"][0] == card
    sets = max(tts_cfg["depformer_weights_per_step_schedule"]) + 1
    d = tts_cfg["depformer_dim"]
    assert tts_h["depformer.layers.0.self_attn.in_proj_weight"]["shape"] == [sets * 3 * d, d]
    assert [f"depformer_in.{i}.weight" in tts_h for i in range(sets)] == [True] * sets
    assert tts_h["linears.0.weight"]["shape"] == [tts_cfg["card"], d]
    assert tts_cfg["dim"] == 2048  # moshi.cpp adds a 2048-wide timestep embedding to the voice
    assert round(tts_cfg["tts_config"]["audio_delay"] * 12.5) == 16  # moshi-tts asserts 16 frames
    voice = header(tiny.voice)["speaker_wavs"]
    assert voice["shape"][1] == tts_h["condition_provider.conditioners.speaker_wavs.output_proj.weight"]["shape"][1]
    assert stt_cfg["extra_heads_num_heads"] > 2  # moshi-stt reads its voice activity from head 2
    # the STT finds Mimi and the tokenizer under their own names too, as the same files
    assert os.path.samefile(tiny.root / tinymodel.STT_DIR / stt_cfg["mimi_name"], tiny.mimi)
    assert os.path.samefile(tiny.root / tinymodel.STT_DIR / stt_cfg["tokenizer_name"], tiny.tokenizer)


def test_tokenizer_loads_and_encodes_like_kyutais():
    for size, vocab in (("tiny", len(tinymodel.tokenizer_pieces(0))), ("real", 8000)):
        proto = tinymodel.sentencepiece_model(tinymodel.dims(size)[0].text_card)
        sp = spm.SentencePieceProcessor(model_proto=proto)
        assert sp.get_piece_size() == vocab
        assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, 3)
        ids = sp.encode("Hello world, 42!")
        assert ids and min(ids) > 3 and sp.decode(ids) == "Hello world, 42!"
        assert sp.id_to_piece(vocab - 1)  # every id up to the LM's text_card has a piece
    assert tinymodel.sentencepiece_model(100) == tinymodel.sentencepiece_model(100)  # deterministic


def test_same_seed_same_files_other_seed_other_weights(tmp_path):
    tensors = tinymodel.voice_tensors(tinymodel.dims("tiny")[0])
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        tinymodel.write_safetensors(tmp_path / name, tensors, seed)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() != (tmp_path / "c").read_bytes()


def test_writes_without_numpy_the_same_bytes_in_every_process(tiny, tmp_path):
    """The wheel has no dependencies: the generator must work with numpy unimportable, and a seed must
    give the same files in another process (no dependence on hash seeds or numpy)."""
    script = (
        "import sys\n"
        "sys.modules['numpy'] = None  # import numpy raises ImportError\n"
        f"sys.path.insert(0, {str(WHEEL_SRC)!r})\n"
        "from moshi_rocm import tinymodel\n"
        f"tinymodel.write_models({str(tmp_path / 'models')!r}, 'tiny', seed=7)\n"
        "assert sys.modules['numpy'] is None\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300,
                       env=dict(os.environ, PYTHONHASHSEED="123"))
    assert r.returncode == 0, r.stderr
    written = sorted(p.relative_to(tmp_path / "models") for p in (tmp_path / "models").rglob("*") if p.is_file())
    assert len(written) == 10  # 9 model files and tinymodel.json
    for rel in written:
        assert (tmp_path / "models" / rel).read_bytes() == (tiny.root / rel).read_bytes(), rel


def test_encodings_match_numpys_rounding():
    values = np.concatenate([np.random.default_rng(0).standard_normal(5000).astype(np.float32) * 3,
                             np.float32([0.0, -0.0, 1.0, 0.01, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)])])
    as_list = [float(v) for v in values]
    bits = values.view("<u4").astype(np.uint64)
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
    assert tinymodel._encode(as_list, "BF16") == bf16.tobytes()
    assert tinymodel._encode(as_list, "F32") == values.astype("<f4").tobytes()
    assert tinymodel._encode(as_list, "F16") == values.astype("<f2").tobytes()
    assert tinymodel._encode(as_list, "I32") == values.astype("<i4").tobytes()


def test_bf16_weights_are_scaled_and_not_periodic(tiny):
    path = tiny.root / tinymodel.TTS_DIR / tinymodel.TTS_MODEL
    h = header(path)
    entry = h["transformer.layers.0.self_attn.in_proj_weight"]
    start, end = entry["data_offsets"]
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + length + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    w = (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])  # [6144, 2048]: 12.6M values
    assert np.isfinite(w).all() and abs(float(w.std()) * np.sqrt(2048) - 1) < 0.01 and abs(float(w.mean())) < 1e-3
    # values come from a cycle of tinymodel._POOL magnitudes with random signs: no row repeats another
    assert len({row.tobytes() for row in w}) == len(w)
    sub = w[:512, :512].astype(np.float64)
    assert np.linalg.matrix_rank(sub) == 512


def test_chunking_does_not_change_the_values(tmp_path, monkeypatch):
    tensors = [tinymodel.Tensor("a", (3, 1001), "BF16", "normal"), tinymodel.Tensor("b", (7, 333), "F32", "unit"),
               tinymodel.Tensor("c", (1001,), "F32", "ones")]
    tinymodel.write_safetensors(tmp_path / "whole", tensors, 5)
    monkeypatch.setattr(tinymodel, "_CHUNK", 64)
    tinymodel.write_safetensors(tmp_path / "chunked", tensors, 5)
    assert (tmp_path / "whole").read_bytes() == (tmp_path / "chunked").read_bytes()


def test_real_size_inventory_matches_the_published_files():
    """Sizes from moshi.cpp's download lists (tools/kyutai_tts-1.6b-en_fr.txt, kyutai_stt-1b-en_fr-candle.txt,
    kyutai_tts-voices.txt): the real dimensions give the real file sizes (headers aside)."""
    tts, stt, mimi = tinymodel.dims("real")

    def size(tensors):
        return sum(tinymodel._nelements(t.shape) * tinymodel._DTYPE_BYTES[t.dtype] for t in tensors)

    assert size(tinymodel.lm_tensors(tts)) == pytest.approx(3683719712, rel=0.005)  # dsm_tts_1e68beda@240
    assert size(tinymodel.lm_tensors(stt)) == pytest.approx(1978522200, rel=0.0001)  # model.safetensors
    assert size(tinymodel.mimi_tensors(mimi)) == pytest.approx(384644900, rel=0.0002)  # Mimi
    assert size(tinymodel.voice_tensors(tts)) == 256000  # a voice embedding, 256 kB


def test_command_line_writes_the_layout_the_tools_search(tmp_path, capsys):
    assert tinymodel.main([str(tmp_path), "--seed", "3"]) == 0
    for rel in ("kyutai/tts-1.6b-en_fr/config.json", "kyutai/tts-1.6b-en_fr/dsm_tts_1e68beda@240.safetensors",
                "kyutai/tts-1.6b-en_fr/tokenizer-e351c8d8-checkpoint125.safetensors",
                "kyutai/tts-1.6b-en_fr/tokenizer_spm_8k_en_fr_audio.model", tinymodel.VOICE,
                "kyutai/stt-1b-en_fr-candle/config.json", "kyutai/stt-1b-en_fr-candle/model.safetensors"):
        assert (tmp_path / rel).is_file(), rel
    assert tinymodel.is_complete(tmp_path, "tiny", 3) and not tinymodel.is_complete(tmp_path, "real", 3)
    assert "moshi-tts -r" in capsys.readouterr().out


def test_generator_runs_on_python_3_9_syntax():
    import ast

    for name in ("tinymodel.py", "selftest.py"):
        source = (WHEEL_SRC / "moshi_rocm" / name).read_text()
        ast.parse(source, feature_version=(3, 9))


def test_bench_parses_the_tools_report_and_computes_the_ratio():
    from builder.commands import bench
    from builder.errors import BuildStepError

    out = 'using device: "CPU"\nframe count:   54 frames\ntoken rate:  0.79 tokens/s\nframe rate:  7.163704 frames/s\n'
    tree = bench.parse_bench("build tree", out, 9.5)
    assert (tree.device, tree.frames, tree.fps) == ("CPU", 54, pytest.approx(7.163704))
    wheel = bench.parse_bench("wheel", out.replace("7.163704", "7.0"), 9.0)
    result = bench.BenchResult("tiny", tree, wheel)
    assert result.ratio == pytest.approx(7.0 / 7.163704)
    assert "ratio wheel / build tree: 0.977" in "\n".join(result.lines())
    with pytest.raises(BuildStepError, match="printed no frame rate"):
        bench.parse_bench("wheel", "Segmentation fault\n", 1.0)


# -- the real tools, from the installed wheel in the clean root -------------------------------------------

FRAME = 1920          # samples per Mimi frame at 24 kHz
RATE = 24000


def ogg_stream_info(path: Path) -> tuple[str, int, int]:
    """(codec, sample rate, samples) of a one-stream Ogg file, from its pages: the first packet names the
    codec (FLAC or Opus header), the last page's granule position is the length in samples."""
    data = path.read_bytes()
    assert data[:4] == b"OggS"
    first = data[27 + data[26]:]  # after the 27-byte page header and its segment table
    if first[:5] == b"\x7fFLAC":
        codec, rate = "flac", int.from_bytes(first[27:30], "big") >> 4   # STREAMINFO sample rate, 20 bits
    elif first[:8] == b"OpusHead":
        codec, rate = "opus", struct.unpack("<I", first[12:16])[0]
    else:
        raise AssertionError(f"unknown codec in {path}: {first[:8]!r}")
    last = data.rfind(b"OggS")
    granule = struct.unpack("<q", data[last + 6:last + 14])[0]
    return codec, rate, granule


@pytest.fixture(scope="module")
def moshi_wheel(tmp_path_factory):
    """The real moshi.cpp wheel for gfx1100: built by the pipeline from MOSHI_BUILD_MOSHI_CPP_SOURCE
    (cached steps), or MOSHI_BUILD_MOSHI_CPP_WHEEL=PATH to test an already packed one."""
    source = os.environ.get("MOSHI_BUILD_MOSHI_CPP_SOURCE")
    if not source:
        pytest.skip("MOSHI_BUILD_MOSHI_CPP_SOURCE is not set (moshi.cpp cannot be downloaded here)")
    if os.geteuid() != 0:
        pytest.skip("the build and clean roots need root")
    given = os.environ.get("MOSHI_BUILD_MOSHI_CPP_WHEEL")
    if given:   # a target wheel, its base beside it
        given = Path(given)
        return [given, *sorted(p for p in given.parent.glob("moshi_rocm-*.whl") if p != given)]
    from builder import pipeline
    from builder.envs import DebianEnvironment
    from builder.sources.recipe import load_recipes, select_application
    from builder.sources import fetch as sources

    opts = fetch_options()
    opts.overrides = sources.parse_overrides([f"moshi.cpp={source}"])
    recipes = select_application(load_recipes(), "moshi.cpp")
    env = DebianEnvironment(SHARED_CACHE / "envs")
    report = pipeline.build(recipes, ["gfx1100"], env, opts, progress=False)
    return pipeline.make_wheels(recipes, report, ["gfx1100"], env, tmp_path_factory.mktemp("moshi-wheel"))


@pytest.fixture(scope="module")
def installed(moshi_wheel, clean_root):
    """The wheel alone (no numpy: the generator needs none) in a venv of the clean root, the tiny model beside it."""
    venv = clean_root.install(moshi_wheel, f"tinymodel-{os.getpid()}")
    work = Path("/tmp") / f"tinymodel-{os.getpid()}"
    host = venv.host_path(work)
    shutil.rmtree(host, ignore_errors=True)
    host.mkdir(parents=True)
    r = venv.run(["python", "-m", "moshi_rocm.tinymodel", str(work / "models")], timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    yield venv, work
    shutil.rmtree(host, ignore_errors=True)
    venv.remove()


def run(venv, argv, timeout=900):
    r = venv.run(argv, timeout=timeout)
    print(r.stdout[-3000:], r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def tts_wav(installed):
    venv, work = installed
    out = work / "hello.wav"
    r = run(venv, ["moshi-tts", "-r", work / "models", "-d", "CPU", "-s", "1", "Hello world, this is a test.",
                   "-o", out])
    assert r.returncode == 0
    return out


def frame_count(output: str) -> int:
    return int(re.search(r"frame count:\s*([0-9]+) frames", output).group(1))


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_tts_writes_a_wav_of_the_generated_frames(installed, tts_wav):
    venv, _ = installed
    with wave.open(str(venv.host_path(tts_wav)), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        samples = w.getnframes()
        pcm = np.frombuffer(w.readframes(samples), dtype="<i2")
    assert samples > 0 and samples % FRAME == 0
    assert pcm.std() > 0  # noise, not silence: the codec's decoder ran
    # FFmpeg reads it back: mimi-encode decodes the WAV with the bundled FFmpeg and counts Mimi frames
    r = run(venv, ["mimi-encode", "-d", "CPU", "-m", installed[1] / "models" / tinymodel.TTS_DIR / tinymodel.MIMI_MODEL,
                   tts_wav, installed[1] / "hello.mimi"])
    assert r.returncode == 0
    assert int(r.stdout.strip().splitlines()[-1]) in (samples // FRAME, samples // FRAME + 1)


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_tts_writes_ogg(installed):
    """.ogg: FFmpeg's Ogg muxer picks FLAC when there is no libvorbis (ours has none)."""
    venv, work = installed
    r = run(venv, ["moshi-tts", "-r", work / "models", "-d", "CPU", "-s", "1", "Hello world.", "-o", work / "hello.ogg"])
    assert r.returncode == 0
    codec, rate, samples = ogg_stream_info(venv.host_path(work / "hello.ogg"))
    generated = frame_count(r.stdout) * FRAME
    # The FLAC encoder takes blocks of 4608 samples; moshi-tts never flushes its resampler's
    # FIFO, so a last partial block is lost (seen: 41472 of 42240 samples).
    assert (codec, rate) == ("flac", RATE) and generated - 4608 < samples <= generated


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_tts_writes_ogg_opus(installed):
    """.opus through libopus (recipes/opus.toml): FFmpeg's own encoder is experimental and 48 kHz only."""
    venv, work = installed
    r = run(venv, ["moshi-tts", "-r", work / "models", "-d", "CPU", "-s", "1", "Hello world.", "-o", work / "hello.opus"])
    assert r.returncode == 0, "moshi-tts could not write Ogg/Opus"
    path = venv.host_path(work / "hello.opus")
    codec, rate, granule = ogg_stream_info(path)
    data = path.read_bytes()
    pre_skip = struct.unpack("<H", data[27 + data[26] + 10:27 + data[26] + 12])[0]
    samples = (granule - pre_skip) // 2     # Opus counts at 48 kHz
    generated = frame_count(r.stdout) * FRAME
    print(f"opus: input rate {rate}, {samples} samples at 24 kHz of {generated} generated")
    # Like FLAC, a last partial encoder frame (here 20 ms) can be lost: moshi-tts does not flush.
    assert (codec, rate) == ("opus", RATE) and generated - 480 <= samples <= generated


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_stt_transcribes_the_wav_to_the_end(installed, tts_wav):
    venv, work = installed
    r = run(venv, ["moshi-stt", "-r", work / "models", "-d", "CPU", "-i", tts_wav])
    assert r.returncode == 0
    with wave.open(str(venv.host_path(tts_wav)), "rb") as w:
        frames = w.getnframes() // FRAME
    assert frame_count(r.stdout) >= frames  # every frame of the file went through Mimi and the LM
    assert "done generating" in r.stdout


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_mimi_encode_writes_the_codes_of_every_frame(installed, tts_wav):
    venv, work = installed
    mimi = work / "models" / tinymodel.TTS_DIR / tinymodel.MIMI_MODEL
    r = run(venv, ["mimi-encode", "-d", "CPU", "-q", "8", "-m", mimi, tts_wav, work / "codes.mimi"])
    assert r.returncode == 0
    data = venv.host_path(work / "codes.mimi").read_bytes()
    assert data[:4] == b"MIMI" and struct.unpack("<i", data[4:8])[0] == 8
    codes = np.frombuffer(data[8:], dtype="<i2").reshape(-1, 8)
    assert len(codes) == int(r.stdout.strip().splitlines()[-1])
    assert codes.min() >= 0 and codes.max() < tinymodel.dims("tiny")[2].codebook_size


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_mimi_decode_round_trips_an_encoded_file(installed, tts_wav):
    venv, work = installed
    mimi = work / "models" / tinymodel.TTS_DIR / tinymodel.MIMI_MODEL
    assert run(venv, ["mimi-encode", "-d", "CPU", "-m", mimi, tts_wav, work / "round.mimi"]).returncode == 0
    r = run(venv, ["mimi-decode", "-d", "CPU", "-m", mimi, work / "round.mimi", work / "round.wav"])
    assert r.returncode == 0, "mimi-decode rejected the file mimi-encode wrote"
    frames = (len(venv.host_path(work / "round.mimi").read_bytes()) - 8) // (32 * 2)
    with wave.open(str(venv.host_path(work / "round.wav")), "rb") as w:
        assert w.getframerate() == RATE and w.getnframes() == frames * FRAME


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_selftest_from_the_installed_wheel(installed):
    venv, _ = installed
    r = run(venv, ["python", "-m", "moshi_rocm", "selftest", "--device", "CPU"], timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "device used: CPU" in r.stdout and re.search(r"TTS: \d+ frames .* at [0-9.]+ frames/s", r.stdout)
    assert re.search(r"STT: \d+ frames at [0-9.]+ frames/s", r.stdout) and "selftest passed" in r.stdout


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_models_download_through_hf_endpoint_then_the_tools_find_the_model_without_r(installed):
    """Issue 22: a local server plays the model host (HF_ENDPOINT) serving the tiny model in the
    folder layout the tools search; `moshi-rocm models download` fetches it into the default model
    folder, and moshi-tts / moshi-stt find it there through the console scripts, with no -r."""
    import hashlib
    from tests.wheels.test_models import HOST, start_server

    venv, work = installed
    models = venv.host_path(work / "models")
    files, served = [], {}
    for path in sorted(p for p in models.rglob("*") if p.is_file() and p.name != "tinymodel.json"):
        out = path.relative_to(models).as_posix()
        url = f"/{'/'.join(out.split('/')[:2])}/resolve/main/{'/'.join(out.split('/')[2:])}"
        served[url] = path.read_bytes()
        files.append({"url": HOST + url, "out": out, "algorithm": "sha256",
                      "digest": hashlib.sha256(served[url]).hexdigest()})
    server = start_server()
    server.files.update(served)
    site = venv.host_path(venv.site_packages())
    listed = site / "moshi_rocm" / "models.json"
    original = listed.read_text()
    doc = json.loads(original)
    doc["models"]["tiny"] = {"list": "(test: the tiny random model)", "files": files}
    listed.write_text(json.dumps(doc))
    home = work / "home"          # the default model folder is under HOME: MODEL_CACHE is not set
    env = {"HOME": str(home), "HF_ENDPOINT": server.endpoint}
    try:
        big = max(served, key=lambda u: len(served[u]))
        server.faults[big] = ["drop"]                      # half of the largest file, then a resume
        r = venv.run(["moshi-rocm", "models", "download", "tiny"], env=env, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        assert [q[2] for q in server.requests if q[0] == "GET" and q[1] == big][-1].startswith("bytes=")
        folder = home / ".cache" / "moshi-rocm" / "models"
        r = venv.run(["moshi-rocm", "models", "list", "tiny"], env=env)
        assert f"model folder: {folder}" in r.stdout and "tiny                         present" in r.stdout
        out = work / "e2e.wav"
        r = venv.run(["moshi-tts", "-d", "CPU", "-s", "1", "Hello world.", "-o", out], env=env, cwd="/", timeout=900)
        print(r.stdout[-2000:], r.stderr[-2000:])
        assert r.returncode == 0 and f"found model path: {folder}/kyutai/tts-1.6b-en_fr/" in r.stdout + r.stderr
        r = venv.run(["moshi-stt", "-d", "CPU", "-i", out], env=env, cwd="/", timeout=900)
        print(r.stdout[-2000:], r.stderr[-2000:])
        assert r.returncode == 0 and f"found model path: {folder}/kyutai/stt-1b-en_fr-candle/" in r.stdout + r.stderr
    finally:
        listed.write_text(original)
        server.shutdown()
