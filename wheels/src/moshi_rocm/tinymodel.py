"""Random-weight Moshi models in the files and layout moshi.cpp loads.

moshi.cpp's real models are gigabytes; these have random weights, so the
tools run every real code path (config parsing, safetensors loading, the
sentencepiece tokenizer, Mimi encode/decode, the LM and depformer, the voice
conditioning) and produce noise. `--size tiny` (default) makes the dimensions
as small as moshi.cpp allows; `--size real` uses the real dimensions of
kyutai/tts-1.6b-en_fr and kyutai/stt-1b-en_fr, for benchmarks.

    python -m moshi_rocm.tinymodel DIR [--size tiny|real] [--seed N]
    moshi-tts -r DIR -d CPU "Hello world" -o hello.wav
    moshi-stt -r DIR -d CPU -i hello.wav
    mimi-encode -m DIR/kyutai/tts-1.6b-en_fr/tokenizer-e351c8d8-checkpoint125.safetensors in.wav out.mimi

Layout under DIR (what the tools find with `-r DIR` and no `-m`; the upstream
file each part follows is named where it is written below):

    kyutai/tts-1.6b-en_fr/config.json
    kyutai/tts-1.6b-en_fr/dsm_tts_1e68beda@240.safetensors        (TTS LM, BF16)
    kyutai/tts-1.6b-en_fr/tokenizer-e351c8d8-checkpoint125.safetensors   (Mimi, F32)
    kyutai/tts-1.6b-en_fr/tokenizer_spm_8k_en_fr_audio.model      (sentencepiece)
    kyutai/tts-voices/expresso/ex03-ex01_happy_001_channel1_334s.wav.1e68beda@240.safetensors
    kyutai/stt-1b-en_fr-candle/config.json
    kyutai/stt-1b-en_fr-candle/model.safetensors                  (STT LM, BF16)
    kyutai/stt-1b-en_fr-candle/mimi-pytorch-e351c8d8@125.safetensors  (hard link to the Mimi file)
    kyutai/stt-1b-en_fr-candle/tokenizer_en_fr_audio_8000.model   (hard link to the tokenizer)

Only the standard library is needed, so `moshi-rocm selftest` works right
after `pip install`: safetensors files are written here directly (an 8-byte
header length, a JSON header and the raw little-endian data). Keep this file
importable on Python 3.9.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import struct
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

# Bump when the files written change, so caches of generated models are refreshed.
FORMAT_VERSION = 2

TTS_DIR = "kyutai/tts-1.6b-en_fr"
STT_DIR = "kyutai/stt-1b-en_fr-candle"
TTS_MODEL = "dsm_tts_1e68beda@240.safetensors"
MIMI_MODEL = "tokenizer-e351c8d8-checkpoint125.safetensors"
STT_MIMI_MODEL = "mimi-pytorch-e351c8d8@125.safetensors"
TTS_TOKENIZER = "tokenizer_spm_8k_en_fr_audio.model"
STT_TOKENIZER = "tokenizer_en_fr_audio_8000.model"
STT_MODEL = "model.safetensors"
# The default voice moshi-tts looks for (tools/moshi-tts.cpp) when the model uses cross attention.
VOICE = "kyutai/tts-voices/expresso/ex03-ex01_happy_001_channel1_334s.wav.1e68beda@240.safetensors"

SIZES = ("tiny", "real")


class LMDims(NamedTuple):
    dim: int
    num_heads: int
    num_layers: int
    hidden: int          # width of the gated feed-forward (linear_out's input)
    context: int
    max_period: int
    card: int            # audio codebook size (rows of the Mimi codebooks)
    n_q: int             # audio codebooks read by the LM
    dep_q: int           # audio codebooks the depformer writes (0: speech to text)
    text_card: int
    depformer_dim: int = 0
    depformer_num_heads: int = 0
    depformer_num_layers: int = 0
    depformer_hidden: int = 0
    depformer_low_rank: int = 0
    depformer_schedule: Tuple[int, ...] = ()
    cross_attention: bool = False
    speaker_dim: int = 0      # channels of the voice's speaker_wavs
    voice_frames: int = 0     # frames of the voice's speaker_wavs
    cfg_dim: int = 0
    control_dim: int = 0
    extra_heads: int = 0
    extra_heads_dim: int = 0


class MimiDims(NamedTuple):
    codebook_size: int    # rows; the LMs' `card`
    codebook_dim: int
    transformer_hidden: int


# Tiny: moshi.cpp fixes Mimi's channel counts and layer counts
# (src/moshi/models/lm_default.h, moshi_mimi_alloc_default) but reads the
# codebook shapes and the transformer's feed-forward width from the weights.
# The TTS LM must be 2048 wide: the voice conditioning adds a 2048-wide
# timestep embedding to the projected voice (src/moshi.cpp, voice_condition).
TINY_TTS = LMDims(dim=2048, num_heads=16, num_layers=1, hidden=16, context=100, max_period=10000,
                  card=64, n_q=2, dep_q=2, text_card=0, depformer_dim=16, depformer_num_heads=2,
                  depformer_num_layers=1, depformer_hidden=16, depformer_low_rank=8,
                  depformer_schedule=(0, 1), cross_attention=True, speaker_dim=16, voice_frames=10,
                  cfg_dim=16, control_dim=16)
TINY_STT = LMDims(dim=64, num_heads=4, num_layers=1, hidden=16, context=100, max_period=100000,
                  card=64, n_q=2, dep_q=0, text_card=0, extra_heads=4, extra_heads_dim=6)
TINY_MIMI = MimiDims(codebook_size=64, codebook_dim=16, transformer_hidden=16)

# Real: kyutai/tts-1.6b-en_fr and kyutai/stt-1b-en_fr (16 layers of 2048, 32
# codebooks of 2048; a 4-layer 1024-wide depformer with 11 weight sets for 32
# steps and rank-128 embeddings; speaker embeddings of 512 x 250).
REAL_SCHEDULE = tuple(list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8)
REAL_TTS = LMDims(dim=2048, num_heads=16, num_layers=16, hidden=5632, context=500, max_period=10000,
                  card=2048, n_q=32, dep_q=32, text_card=8000, depformer_dim=1024, depformer_num_heads=16,
                  depformer_num_layers=4, depformer_hidden=2048, depformer_low_rank=128,
                  depformer_schedule=REAL_SCHEDULE, cross_attention=True, speaker_dim=512, voice_frames=250,
                  cfg_dim=16, control_dim=2048)
REAL_STT = LMDims(dim=2048, num_heads=16, num_layers=16, hidden=5632, context=750, max_period=100000,
                  card=2048, n_q=32, dep_q=0, text_card=8000, extra_heads=4, extra_heads_dim=6)
REAL_MIMI = MimiDims(codebook_size=2048, codebook_dim=256, transformer_hidden=2048)

MIMI_QUANTIZERS = 32      # 1 semantic + 31 acoustic codebooks, all loaded
TTS_AUDIO_DELAY = 1.28    # seconds; moshi-tts expects 16 frames at 12.5 Hz


class Tensor(NamedTuple):
    name: str
    shape: Tuple[int, ...]
    dtype: str            # safetensors dtype: F32, BF16, F16 or I32
    init: str             # normal (std = 1/sqrt(fan in)), unit (std 1), ones, zeros or small


class ModelFiles(NamedTuple):
    root: Path
    size: str
    tts_config: Path
    stt_config: Path
    mimi: Path
    tokenizer: Path
    voice: Path


# -- safetensors -----------------------------------------------------------------

_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I32": 4}
_SIGN_BIT = {"F32": 1 << 31, "BF16": 1 << 15, "F16": 1 << 15}  # I32 values are not sign-flipped
_CONSTANTS = {"ones": 1.0, "zeros": 0.0, "small": 0.01}      # small: layer scales, keep the residual stream stable

# Random values without numpy, fast enough for the real sizes (gigabytes): each
# file draws _POOL standard normal values once; a tensor is that pool scaled
# for its fan-in, encoded once per (scale, dtype), read cyclically from a
# random offset, with every value's sign bit flipped at random (one big
# integer XOR per chunk), so no two tensors and no two rows repeat each other.
_POOL = 65537      # a prime: the cycle does not line up with row lengths
_CHUNK = 1 << 20   # values encoded and written at once; even, so each chunk draws whole 32-bit
                  # words of sign bits and the values do not depend on it


def _nelements(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _encode(values: Sequence[float], dtype: str) -> bytes:
    """`values` as little-endian `dtype` (BF16: the float32's high half, rounded to nearest even)."""
    n = len(values)
    if dtype == "F32":
        return struct.pack(f"<{n}f", *values)
    if dtype == "F16":
        return struct.pack(f"<{n}e", *values)
    if dtype == "I32":
        return struct.pack(f"<{n}i", *[int(v) for v in values])
    if dtype == "BF16":  # the high half of the float32, rounded to nearest even
        bits = struct.unpack(f"<{n}I", struct.pack(f"<{n}f", *values))
        return struct.pack(f"<{n}H", *[(b + 0x7FFF + ((b >> 16) & 1)) >> 16 for b in bits])
    raise ValueError(f"unsupported dtype {dtype}")


@functools.lru_cache(maxsize=16)
def _sign_mask(count: int, dtype: str) -> int:
    """The sign bits of `count` little-endian `dtype` values, as one integer."""
    width = _DTYPE_BYTES[dtype]
    return int.from_bytes(_SIGN_BIT[dtype].to_bytes(width, "little") * count, "little")


def _scale(t: Tensor) -> float:
    if t.init == "normal":  # std = 1/sqrt(fan in)
        fan_in = _nelements(t.shape[1:]) if len(t.shape) > 1 else 1
        return 1.0 / math.sqrt(max(fan_in, 1))
    if t.init == "unit":
        return 1.0
    raise ValueError(f"unknown init {t.init!r} of {t.name}")


def _tensor_data(rng: random.Random, pool: Sequence[float], encoded: Dict[Tuple[float, str], bytes],
                 t: Tensor) -> Iterator[bytes]:
    """The bytes of `t`, in chunks of at most _CHUNK values; `encoded` caches the scaled pools."""
    n = _nelements(t.shape)
    if t.init in _CONSTANTS:
        one = _encode([_CONSTANTS[t.init]], t.dtype)
        for start in range(0, n, _CHUNK):
            yield one * min(_CHUNK, n - start)
        return
    key = (_scale(t), t.dtype)
    if key not in encoded:
        encoded[key] = _encode([v * key[0] for v in pool], t.dtype)
    block, width, period = encoded[key], _DTYPE_BYTES[t.dtype], len(pool)
    offset = rng.getrandbits(32) % period  # not randrange: its algorithm may change between versions
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        first = (offset + start) % period
        data = (block * ((first + count) // period + 1))[first * width:(first + count) * width]
        if t.dtype in _SIGN_BIT:
            signs = rng.getrandbits(count * width * 8) & _sign_mask(count, t.dtype)
            data = (int.from_bytes(data, "little") ^ signs).to_bytes(count * width, "little")
        yield data


def write_safetensors(path: Path, tensors: Sequence[Tensor], seed: int) -> None:
    """Write `tensors` with random values (deterministic for `seed`), in chunks: a real-size model
    does not fit in memory."""
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        size = _nelements(t.shape) * _DTYPE_BYTES[t.dtype]
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = random.Random(seed)
    pool = [rng.gauss(0.0, 1.0) for _ in range(_POOL)]
    encoded: Dict[Tuple[float, str], bytes] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors:
            for chunk in _tensor_data(rng, pool, encoded, t):
                f.write(chunk)
    os.replace(tmp, path)


# -- tensor inventories ------------------------------------------------------------

def _lm_layer(prefix: str, dim: int, hidden: int, weight_sets: int, per_step: bool, cross: bool) -> List[Tensor]:
    """One transformer layer as moshi.cpp's get_weights reads it (src/moshi/modules/transformer.h).

    Weights per step (the depformer) are stacked along the output dimension:
    in_proj_weight [sets*3*dim, dim], out_proj.weight [sets*dim, dim], gating.<i>.*.
    """
    out = [Tensor(prefix + "norm1.alpha", (1, 1, dim), "BF16", "ones"),
           Tensor(prefix + "self_attn.in_proj_weight", (weight_sets * 3 * dim, dim), "BF16", "normal"),
           Tensor(prefix + "self_attn.out_proj.weight", (weight_sets * dim, dim), "BF16", "normal")]
    if cross:
        out += [Tensor(prefix + "norm_cross.weight", (dim,), "BF16", "ones"),
                Tensor(prefix + "norm_cross.bias", (dim,), "BF16", "zeros"),
                Tensor(prefix + "cross_attention.in_proj_weight", (3 * dim, dim), "BF16", "normal"),
                Tensor(prefix + "cross_attention.out_proj.weight", (dim, dim), "BF16", "normal")]
    out.append(Tensor(prefix + "norm2.alpha", (1, 1, dim), "BF16", "ones"))
    gatings = [f"{prefix}gating.{i}." for i in range(weight_sets)] if per_step else [prefix + "gating."]
    for g in gatings:
        out += [Tensor(g + "linear_in.weight", (2 * hidden, dim), "BF16", "normal"),
                Tensor(g + "linear_out.weight", (dim, hidden), "BF16", "normal")]
    return out


def lm_tensors(d: LMDims) -> List[Tensor]:
    """The LM's tensors, named as in the checkpoint (moshi.cpp strips its "lm." prefix).

    Follows src/moshi/models/lm.h (get_weights), lm_default.h (which modules
    exist for a config), lm_utils.h (embeddings, demux), transformer.h and
    tts.h (conditioners).
    """
    out: List[Tensor] = []
    demux = d.dep_q > 0  # the TTS demuxes its second text stream, the STT does not
    weight_sets = max(d.depformer_schedule) + 1 if d.depformer_schedule else d.dep_q
    if d.dep_q:
        for i in range(weight_sets):
            out.append(Tensor(f"depformer_in.{i}.weight", (d.depformer_dim, d.dim), "BF16", "normal"))
        for i in range(d.depformer_num_layers):
            out += _lm_layer(f"depformer.layers.{i}.", d.depformer_dim, d.depformer_hidden, weight_sets,
                             per_step=True, cross=False)
        width = d.depformer_low_rank or d.depformer_dim
        out += [Tensor("depformer_text_emb.weight", (d.text_card + 1, width), "BF16", "unit"),
                Tensor("depformer_text_emb.out1.weight", (d.depformer_dim, width), "BF16", "normal"),
                Tensor("depformer_text_emb.out2.weight", (d.depformer_dim, width), "BF16", "normal")]
        for i in range(d.dep_q - 1):
            out.append(Tensor(f"depformer_emb.{i}.weight", (d.card + 1, width), "BF16", "unit"))
            if d.depformer_low_rank:
                out.append(Tensor(f"depformer_emb.{i}.low_rank.weight", (d.depformer_dim, width), "BF16", "normal"))
    for i in range(d.extra_heads):
        out.append(Tensor(f"extra_heads.{i}.weight", (d.extra_heads_dim, d.dim), "BF16", "normal"))
    for i in range(d.dep_q):
        out.append(Tensor(f"linears.{i}.weight", (d.card, d.depformer_dim), "BF16", "normal"))
    for i in range(d.n_q):
        out.append(Tensor(f"emb.{i}.weight", (d.card + 1, d.dim), "BF16", "unit"))
    out.append(Tensor("text_emb.weight", (d.text_card + 1, d.dim), "BF16", "unit"))
    if demux:
        out += [Tensor("text_emb.out1.weight", (d.dim, d.dim), "BF16", "normal"),
                Tensor("text_emb.out2.weight", (d.dim, d.dim), "BF16", "normal")]
    for i in range(d.num_layers):
        out += _lm_layer(f"transformer.layers.{i}.", d.dim, d.hidden, 1, per_step=False, cross=d.cross_attention)
    out += [Tensor("out_norm.alpha", (1, 1, d.dim), "BF16", "ones"),
            Tensor("text_linear.weight", (d.text_card, d.dim), "BF16", "normal")]
    if d.cross_attention:
        # src/moshi/models/tts.h: get_weights( loader, conditioners_t * ); the
        # learnt paddings are repeated and added in F32, so they are stored as F32.
        p = "condition_provider.conditioners."
        out += [Tensor(p + "cfg.embed.weight", (7, d.cfg_dim), "BF16", "unit"),
                Tensor(p + "cfg.learnt_padding", (1, 1, d.dim), "F32", "zeros"),
                Tensor(p + "cfg.output_proj.weight", (d.dim, d.cfg_dim), "BF16", "normal"),
                Tensor(p + "control.embed.weight", (1, d.control_dim), "BF16", "unit"),
                Tensor(p + "control.learnt_padding", (1, 1, d.dim), "F32", "zeros"),
                Tensor(p + "control.output_proj.weight", (d.dim, d.control_dim), "BF16", "normal"),
                Tensor(p + "speaker_wavs.learnt_padding", (1, 1, d.dim), "F32", "zeros"),
                Tensor(p + "speaker_wavs.output_proj.weight", (d.dim, d.speaker_dim), "BF16", "normal")]
    return out


def voice_tensors(d: LMDims) -> List[Tensor]:
    """A voice for the cross-attention TTS: moshi.cpp reads "voice.speaker_wavs" (src/moshi.cpp,
    moshi_lm_load_voice_condition) as [1, channels, frames]."""
    return [Tensor("speaker_wavs", (1, d.speaker_dim, d.voice_frames), "BF16", "unit")]


def _conv(prefix: str, out_ch: int, in_ch: int, kernel: int, bias: bool = True) -> List[Tensor]:
    out = [Tensor(prefix + "conv.conv.weight", (out_ch, in_ch, kernel), "F32", "normal")]
    if bias:
        out.append(Tensor(prefix + "conv.conv.bias", (out_ch,), "F32", "zeros"))
    return out


def _convtr(prefix: str, in_ch: int, out_per_group: int, kernel: int, bias: bool = True) -> List[Tensor]:
    out = [Tensor(prefix + "convtr.convtr.weight", (in_ch, out_per_group, kernel), "F32", "normal")]
    if bias:
        out.append(Tensor(prefix + "convtr.convtr.bias", (out_per_group,), "F32", "zeros"))
    return out


def _resnet(prefix: str, dim: int) -> List[Tensor]:
    return _conv(prefix + "block.1.", dim // 2, dim, 3) + _conv(prefix + "block.3.", dim, dim // 2, 1)


def _mimi_transformer(prefix: str, hidden: int) -> List[Tensor]:
    out: List[Tensor] = []
    for i in range(8):
        p = f"{prefix}layers.{i}."
        out += [Tensor(p + "norm1.weight", (512,), "F32", "ones"),
                Tensor(p + "norm1.bias", (512,), "F32", "zeros"),
                Tensor(p + "self_attn.in_proj_weight", (3 * 512, 512), "F32", "normal"),
                Tensor(p + "self_attn.out_proj.weight", (512, 512), "F32", "normal"),
                Tensor(p + "layer_scale_1.scale", (512,), "F32", "small"),
                Tensor(p + "norm2.weight", (512,), "F32", "ones"),
                Tensor(p + "norm2.bias", (512,), "F32", "zeros"),
                Tensor(p + "linear1.weight", (hidden, 512), "F32", "normal"),
                Tensor(p + "linear2.weight", (512, hidden), "F32", "normal"),
                Tensor(p + "layer_scale_2.scale", (512,), "F32", "small")]
    return out


def mimi_tensors(m: MimiDims) -> List[Tensor]:
    """Mimi, named as in the checkpoint (moshi.cpp strips its "mimi." prefix).

    Channel counts, kernels and strides are the ones moshi.cpp hard-codes in
    src/moshi/models/lm_default.h (moshi_mimi_alloc_default); names follow
    src/moshi.cpp (mimi_alloc), seanet.h, conv.h, core_vq.h and vq.h.
    """
    out: List[Tensor] = []
    for group, count in (("rvq_first", 1), ("rvq_rest", MIMI_QUANTIZERS - 1)):
        q = f"quantizer.{group}."
        for i in range(count):
            c = f"{q}vq.layers.{i}._codebook."
            out += [Tensor(c + "embedding_sum", (m.codebook_size, m.codebook_dim), "F32", "unit"),
                    Tensor(c + "cluster_usage", (m.codebook_size,), "F32", "ones")]
        out += [Tensor(q + "output_proj.weight", (512, m.codebook_dim, 1), "F32", "normal"),
                Tensor(q + "input_proj.weight", (m.codebook_dim, 512, 1), "F32", "normal")]
    out += _convtr("upsample.convtr.", 512, 1, 4, bias=False)           # groups = 512
    out += _mimi_transformer("decoder_transformer.transformer.", m.transformer_hidden)
    # decoder.model.N: 0 conv, 2 convtr, 3 resnet, 5 convtr, 6 resnet, 8 convtr, 9 resnet, 11 convtr, 12 resnet, 14 conv
    out += _conv("decoder.model.0.", 1024, 512, 7)
    for n, (cin, cout, k) in zip((2, 5, 8, 11), ((1024, 512, 16), (512, 256, 12), (256, 128, 10), (128, 64, 8))):
        out += _convtr(f"decoder.model.{n}.", cin, cout, k)
        out += _resnet(f"decoder.model.{n + 1}.", cout)
    out += _conv("decoder.model.14.", 1, 64, 3)
    out += _conv("downsample.conv.", 512, 512, 4, bias=False)
    out += _mimi_transformer("encoder_transformer.transformer.", m.transformer_hidden)
    # encoder.model.N: 0 conv, 1 resnet, 3 conv, 4 resnet, 6 conv, 7 resnet, 9 conv, 10 resnet, 12 conv, 14 conv
    out += _conv("encoder.model.0.", 64, 1, 7)
    for n, (cin, cout, k) in zip((1, 4, 7, 10), ((64, 128, 8), (128, 256, 10), (256, 512, 12), (512, 1024, 16))):
        out += _resnet(f"encoder.model.{n}.", cin)
        out += _conv(f"encoder.model.{n + 2}.", cout, cin, k)
    out += _conv("encoder.model.14.", 512, 1024, 3)
    return out


# -- configs (read by src/config.h, moshi_get_config; every key it reads is written) --

def _common_config(d: LMDims, tokenizer: str, mimi: str, moshi: str) -> Dict[str, object]:
    return {
        "card": d.card, "n_q": d.n_q, "dep_q": d.dep_q, "dim": d.dim, "text_card": d.text_card,
        "existing_text_padding_id": 3, "num_heads": d.num_heads, "num_layers": d.num_layers,
        "hidden_scale": 4.125, "causal": True, "layer_scale": None, "context": d.context,
        "max_period": d.max_period, "gating": "silu", "norm": "rms_norm_f32", "positional_embedding": "rope",
        "tokenizer_name": tokenizer, "mimi_name": mimi, "moshi_name": moshi,
    }


def tts_config(d: LMDims) -> Dict[str, object]:
    c = _common_config(d, TTS_TOKENIZER, MIMI_MODEL, TTS_MODEL)
    c.update({
        "delays": [0, 0] + [2] * (d.n_q - 1),
        "depformer_dim": d.depformer_dim, "depformer_num_heads": d.depformer_num_heads,
        "depformer_num_layers": d.depformer_num_layers, "depformer_dim_feedforward": d.depformer_hidden * 3 // 2,
        "depformer_multi_linear": True, "depformer_context": d.dep_q, "depformer_max_period": 10000,
        "depformer_gating": "silu", "depformer_pos_emb": "none", "depformer_weights_per_step": True,
        "depformer_weights_per_step_schedule": list(d.depformer_schedule),
        "depformer_low_rank_embeddings": d.depformer_low_rank,
        "demux_second_stream": True, "text_card_out": None, "extra_heads_num_heads": 0,
        "conditioners": {
            "speaker_wavs": {"type": "tensor", "tensor": {"dim": d.speaker_dim}},
            "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": d.cfg_dim, "tokenizer": "noop",
                                           "possible_values": ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]}},
            "control": {"type": "lut", "lut": {"n_bins": 1, "dim": d.control_dim, "tokenizer": "noop",
                                               "possible_values": ["ok"]}},
        },
        "fuser": {"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1.0,
                  "sum": ["control", "cfg"], "prepend": [], "cross": ["speaker_wavs"]},
        "cross_attention": True,
        "tts_config": {"audio_delay": TTS_AUDIO_DELAY, "second_stream_ahead": 2},
        "model_id": {"sig": "1e68beda", "epoch": 240},
        "lm_gen_config": {"temp": 0.6, "temp_text": 0.6, "top_k": 250, "top_k_text": 50},
        "model_type": "tts",
    })
    return c


def stt_config(d: LMDims) -> Dict[str, object]:
    c = _common_config(d, STT_TOKENIZER, STT_MIMI_MODEL, STT_MODEL)
    c.update({
        "delays": [0] * (d.n_q + 1),
        "depformer_dim": 1024, "depformer_num_heads": 16, "depformer_num_layers": 6,
        "depformer_dim_feedforward": 3072, "depformer_multi_linear": True, "depformer_context": 0,
        "depformer_max_period": 0, "depformer_gating": "silu", "depformer_pos_emb": "none",
        "depformer_weights_per_step": True, "depformer_low_rank_embeddings": 0,
        "demux_second_stream": False, "text_card_out": None, "conditioners": {}, "cross_attention": False,
        "extra_heads_num_heads": d.extra_heads, "extra_heads_dim": d.extra_heads_dim,
        "stt_config": {"audio_silence_prefix_seconds": 0.0, "audio_delay_seconds": 0.5},
        # moshi-stt passes these temperatures as they are (src/config.h gives them no default).
        "lm_gen_config": {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
        "model_type": "stt",
    })
    return c


# -- sentencepiece tokenizer (a ModelProto written with the protobuf wire format) --

_BASE_PIECES = (["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
                + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [str(i) for i in range(10)]
                + list(".,!?'-:;\"()"))
_SPECIAL = (("<unk>", 2), ("<s>", 3), ("</s>", 3), ("<pad>", 3))  # (piece, type): UNKNOWN=2, CONTROL=3


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def tokenizer_pieces(vocab_size: int) -> List[Tuple[str, float, int]]:
    """(piece, score, type): 4 specials (ids 0-3, <pad> = 3 as Kyutai's), single characters,
    then "\u2581"-prefixed filler words up to `vocab_size`."""
    pieces = [(p, 0.0, t) for p, t in _SPECIAL]
    pieces += [(p, -2.0 - i * 0.01, 1) for i, p in enumerate(_BASE_PIECES)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    while len(pieces) < vocab_size:
        word, n = "", i
        while True:
            word = letters[n % 26] + word
            n = n // 26 - 1
            if n < 0:
                break
        pieces.append(("\u2581" + word + "q", -10.0 - i * 0.001, 1))  # "q" suffix: no clash with base pieces
        i += 1
    return pieces


def sentencepiece_model(vocab_size: int = 0) -> bytes:
    """A valid unigram sentencepiece model (sentencepiece_model.proto, ModelProto):
    pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec = 2 {model_type = 3,
    vocab_size = 4, unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43},
    normalizer_spec = 3 {name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
    escape_whitespaces = 5}; no precompiled charsmap: identity normalization."""
    pieces = tokenizer_pieces(vocab_size)
    out = bytearray()
    for piece, score, kind in pieces:
        body = _field_bytes(1, piece.encode()) + _field_float(2, score) + _field_varint(3, kind)
        out += _field_bytes(1, body)
    trainer = (_field_varint(3, 1) + _field_varint(4, len(pieces)) + _field_varint(40, 0) + _field_varint(41, 1)
               + _field_varint(42, 2) + _field_varint(43, 3))
    normalizer = _field_bytes(1, b"identity") + _field_varint(3, 1) + _field_varint(4, 1) + _field_varint(5, 1)
    out += _field_bytes(2, trainer) + _field_bytes(3, normalizer)
    return bytes(out)


# -- the whole set ----------------------------------------------------------------

def dims(size: str) -> Tuple[LMDims, LMDims, MimiDims]:
    """(tts, stt, mimi) dimensions; the text vocabulary is the tokenizer's."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; one of {', '.join(SIZES)}")
    tts, stt, mimi = (TINY_TTS, TINY_STT, TINY_MIMI) if size == "tiny" else (REAL_TTS, REAL_STT, REAL_MIMI)
    vocab = tts.text_card or len(tokenizer_pieces(0))
    return tts._replace(text_card=vocab), stt._replace(text_card=vocab), mimi


def _link(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a relative symlink
        os.symlink(os.path.relpath(src, dst.parent), dst)


def write_models(root: Path, size: str = "tiny", seed: int = 0,
                 echo=lambda message: None) -> ModelFiles:
    """Write the TTS, STT and Mimi models with random weights under `root` (see the module docstring)."""
    tts, stt, mimi = dims(size)
    root = Path(root)
    tts_dir, stt_dir = root / TTS_DIR, root / STT_DIR
    tts_dir.mkdir(parents=True, exist_ok=True)
    stt_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = tts_dir / TTS_TOKENIZER
    tokenizer.write_bytes(sentencepiece_model(tts.text_card))
    echo(f"writing Mimi ({size}) ...")
    write_safetensors(tts_dir / MIMI_MODEL, mimi_tensors(mimi), seed)
    echo(f"writing the TTS model ({size}) ...")
    write_safetensors(tts_dir / TTS_MODEL, lm_tensors(tts), seed + 1)
    voice = root / VOICE
    write_safetensors(voice, voice_tensors(tts), seed + 2)
    (tts_dir / "config.json").write_text(json.dumps(tts_config(tts), indent=2) + "\n")
    echo(f"writing the STT model ({size}) ...")
    write_safetensors(stt_dir / STT_MODEL, lm_tensors(stt), seed + 3)
    (stt_dir / "config.json").write_text(json.dumps(stt_config(stt), indent=2) + "\n")
    # Upstream ships the same Mimi and tokenizer with both models under these names.
    _link(tts_dir / MIMI_MODEL, stt_dir / STT_MIMI_MODEL)
    _link(tokenizer, stt_dir / STT_TOKENIZER)
    (root / "tinymodel.json").write_text(json.dumps(
        {"format_version": FORMAT_VERSION, "size": size, "seed": seed}) + "\n")
    return ModelFiles(root, size, tts_dir / "config.json", stt_dir / "config.json", tts_dir / MIMI_MODEL,
                      tokenizer, voice)


def is_complete(root: Path, size: str, seed: int = 0) -> bool:
    """True when `root` holds a finished set written by this version for `size` and `seed`."""
    try:
        stamp = json.loads((Path(root) / "tinymodel.json").read_text())
    except (OSError, ValueError):
        return False
    return stamp == {"format_version": FORMAT_VERSION, "size": size, "seed": seed}


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moshi_rocm.tinymodel", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where to write the models (the tools' -r / MODEL_CACHE)")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    files = write_models(args.directory, args.size, args.seed, echo=print)
    print(f"{args.size} models written under {files.root}; run e.g. moshi-tts -r {files.root} -d CPU \"Hello\" -o out.wav")
    return 0


if __name__ == "__main__":
    sys.exit(main())
