"""Tests for the ticket file format (format.py), save/load (api.py) and the model card (cards.py)."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import ticket_zoo as tz
from ticket_zoo.errors import ConfigError, TicketFormatError, TicketNotFoundError, shorten
from ticket_zoo.format import (
    FORMAT_VERSION,
    read_ticket,
    read_ticket_bytes,
    ticket_from_bytes,
    ticket_to_bytes,
    write_ticket,
)
from ticket_zoo.masks import magnitude_masks, prunable_weights
from ticket_zoo.ticket import Ticket, create_model

META = {
    "source": "digits",
    "method": "global",
    "level": 3,
    "rewind_step": 20,
    "seed": 7,
    "source_test_acc": 93.25,
    "excluded": ["head"],
    "recipe": {"lr": 0.1, "note": "ünïcode ok", "none": None},
}


@lru_cache(maxsize=2)  # big states (vgg19: 80 MB) are not kept for the whole session
def _state(arch: str, kwargs_json: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """A seeded rewind state with non-trivial buffers (cached: big models are built once)."""
    torch.manual_seed(0)
    model = create_model(arch, json.loads(kwargs_json))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "running_var", "bias")):
                t.copy_(torch.rand_like(t) + 0.1)
            elif name.endswith("num_batches_tracked"):
                t.fill_(123)
    return tuple((k, v.detach().clone()) for k, v in model.state_dict().items())


def make_ticket(
    arch: str,
    kwargs: dict,
    density: float,
    *,
    prune_head: bool = False,
    overrides: dict[str, float] | None = None,
    scope: str = "global",
    dtype: torch.dtype | None = None,
) -> Ticket:
    state = dict(_state(arch, json.dumps(kwargs, sort_keys=True)))
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model = create_model(arch, kwargs, device="meta")  # only for the prunable names
    names = list(prunable_weights(model, prune_head=prune_head))
    masks = magnitude_masks({n: state[n] for n in names}, density, scope=scope, fixed_densities=overrides)
    return Ticket(arch=arch, arch_kwargs=dict(kwargs), masks=masks, init=state, meta=dict(META))


def assert_same_ticket(a: Ticket, b: Ticket) -> None:
    assert (a.arch, a.arch_kwargs, a.meta) == (b.arch, b.arch_kwargs, b.meta)
    assert set(a.masks) == set(b.masks)
    for name, mask in a.masks.items():
        assert b.masks[name].dtype == torch.bool and torch.equal(mask, b.masks[name]), name
    assert set(a.init) == set(b.init)
    for name, value in a.init.items():
        assert b.init[name].dtype == value.dtype, name
        assert b.init[name].shape == value.shape, name
        assert torch.equal(value, b.init[name]), name


# --- round trips over every architecture -------------------------------------------------------------

SMALL = [
    ("lenet_300_100", {"num_classes": 10}),
    ("conv2", {"num_classes": 10, "img_size": 8}),
    ("conv4", {"num_classes": 10, "img_size": 8}),
    ("conv6", {"num_classes": 10, "img_size": 8}),
    ("resnet20_cifar", {"num_classes": 10}),
]
# 9-20M parameters each (timm's vgg11 with a slim pre-logits MLP; the full one is 129M): few densities.
BIG = [
    ("resnet56_cifar", {"num_classes": 10}, 0.8),
    ("resnet56_cifar", {"num_classes": 10}, 0.02),
    ("vgg11_cifar", {"num_classes": 10}, 0.05),
    ("vgg16_cifar", {"num_classes": 10}, 0.2),
    ("vgg19_cifar", {"num_classes": 100}, 0.01),
    ("vgg19_cifar", {"num_classes": 100}, 0.5),
    ("resnet18", {"num_classes": 10}, 0.2),
    ("vgg11", {"num_classes": 10, "mlp_ratio": 0.015625}, 0.05),
]


@pytest.mark.parametrize("density", [0.8, 0.2, 0.05, 0.01])
@pytest.mark.parametrize(("arch", "kwargs"), SMALL, ids=[a for a, _ in SMALL])
def test_round_trip_small_architectures(tmp_path: Path, arch: str, kwargs: dict, density: float) -> None:
    ticket = make_ticket(arch, kwargs, density)
    tz.save(ticket, tmp_path)
    back = tz.load(tmp_path)
    assert_same_ticket(ticket, back)
    assert back.density == pytest.approx(density, abs=1e-4)


@pytest.mark.parametrize(("arch", "kwargs", "density"), BIG, ids=[f"{a}-{d}" for a, _, d in BIG])
def test_round_trip_big_architectures(tmp_path: Path, arch: str, kwargs: dict, density: float) -> None:
    ticket = make_ticket(arch, kwargs, density)
    path = write_ticket(ticket, tmp_path / "t.safetensors")
    assert_same_ticket(ticket, read_ticket(path))
    # about 1 + 32*d bits per prunable float32 weight, plus the dense rest
    n_masked = sum(m.numel() for m in ticket.masks.values())
    dense_rest = sum(v.numel() * 4 for k, v in ticket.init.items() if k not in ticket.masks)
    budget = n_masked / 8 + 4 * round(density * n_masked) + dense_rest + 64 * 1024
    assert path.stat().st_size <= budget


def test_round_trip_pruned_head_and_empty_and_full_layers(tmp_path: Path) -> None:
    ticket = make_ticket(
        "lenet_300_100",
        {"num_classes": 10},
        0.1,
        prune_head=True,
        overrides={"fc1.weight": 0.0, "fc2.weight": 1.0},
        scope="layerwise",
    )
    assert "head.weight" in ticket.masks
    assert not bool(ticket.masks["fc1.weight"].any()) and bool(ticket.masks["fc2.weight"].all())
    tz.save(ticket, tmp_path)
    back = tz.load(tmp_path)
    assert_same_ticket(ticket, back)
    assert back.layer_densities["fc1.weight"] == 0.0 and back.layer_densities["fc2.weight"] == 1.0
    assert int(back.init["fc1.weight"].count_nonzero()) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_round_trip_low_precision_init(tmp_path: Path, dtype: torch.dtype) -> None:
    ticket = make_ticket("conv2", {"num_classes": 10, "img_size": 8}, 0.3, dtype=dtype)
    assert ticket.init["features.0.weight"].dtype == dtype
    tz.save(ticket, tmp_path)
    back = tz.load(tmp_path)
    assert_same_ticket(ticket, back)
    assert back.init["features.0.bias"].dtype == dtype


def test_same_ticket_same_bytes_and_plain_safetensors(tmp_path: Path) -> None:
    ticket = make_ticket("conv2", {"num_classes": 10, "img_size": 8}, 0.3)
    data = ticket_to_bytes(ticket)
    assert data == ticket_to_bytes(make_ticket("conv2", {"num_classes": 10, "img_size": 8}, 0.3))
    path = tmp_path / "t.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), framework="pt") as f:  # any safetensors reader can open it
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "ticket-zoo" and meta["format_version"] == str(FORMAT_VERSION)
    assert "mask.features.0.weight" in keys and "init.features.0.bias" in keys
    n = ticket.masks["features.0.weight"].numel()
    packed = st_load(data)["mask.features.0.weight"]
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
    unpacked = np.unpackbits(packed.numpy(), bitorder=meta["bitorder"])[:n].astype(bool)
    assert np.array_equal(unpacked, ticket.masks["features.0.weight"].reshape(-1).numpy())


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tz.save(make_ticket("conv2", {"num_classes": 10, "img_size": 8}, 0.3), tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a ticket")

    class NoUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", forbidden)
    ticket = tz.load(tmp_path)
    assert ticket.build(num_classes=3).get_classifier().out_features == 3


def test_load_missing_path_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(TicketNotFoundError):
        tz.load(tmp_path / "missing")
    with pytest.raises(TicketNotFoundError):
        tz.load(str(tmp_path / "missing.safetensors"))
    with pytest.raises(TicketNotFoundError, match="without ticket.safetensors"):
        tz.load(tmp_path)  # an existing directory that holds no ticket


def test_failed_write_leaves_old_ticket_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_ticket("conv2", {"num_classes": 10, "img_size": 8}, 0.3)
    tz.save(old, tmp_path)
    before = (tmp_path / "ticket.safetensors").read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        tz.save(make_ticket("conv2", {"num_classes": 10, "img_size": 8}, 0.05), tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "ticket.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "ticket.safetensors"]
    assert_same_ticket(old, tz.load(tmp_path))


# --- model card --------------------------------------------------------------------------------------


def test_model_card_parses_with_huggingface_hub(tmp_path: Path) -> None:
    ticket = make_ticket("conv4", {"num_classes": 10, "img_size": 8}, 0.2)
    tz.save(ticket, tmp_path, name="conv4-digits-20pct")
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "ticket-zoo"
    assert {"lottery-ticket", "pruning", "timm", "conv4"} <= set(data["tags"])
    assert "datasets" not in data  # digits is not on the Hub; tests/test_cards.py checks Hub ids
    assert data["pipeline_tag"] == "image-classification" and data["ticket"]["source"] == "digits"
    results = data["model-index"][0]["results"]
    assert results[0]["metrics"][0]["type"] == "accuracy"
    assert results[0]["metrics"][0]["value"] == pytest.approx(META["source_test_acc"])
    assert data["model-index"][0]["name"] == "conv4-digits-20pct"
    assert data["ticket"]["density"] == pytest.approx(ticket.density, abs=1e-6)
    assert "## Density per layer" in card.text
    for layer, mask in ticket.masks.items():
        assert f"| `{layer}` | {tuple(mask.shape)} | {int(mask.sum())} |" in card.text


def test_model_card_without_accuracy_has_no_model_index(tmp_path: Path) -> None:
    ticket = make_ticket("lenet_300_100", {"num_classes": 10}, 0.2).with_(meta={"source": "digits"})
    tz.save(ticket, tmp_path)
    data = ModelCard.load(tmp_path / "README.md").data.to_dict()
    assert data["library_name"] == "ticket-zoo" and "model-index" not in data


# --- malformed files ---------------------------------------------------------------------------------

# LeNet on a 5x5 input with 3 classes: fc1 has 7500 weights and the pruned head 300, so their packed
# masks end in a partly used byte (padding bits exist).
BASE_KW = {"num_classes": 3, "in_chans": 1, "img_size": 5}


@lru_cache(maxsize=1)
def base_bytes() -> bytes:
    return ticket_to_bytes(make_ticket("lenet_300_100", BASE_KW, 0.3, prune_head=True))


def split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: object, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def edit_header(fn: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, body = split(data)
        result = fn(header)
        return join(header if result is None else result, body)

    return apply


def edit_meta(key: str, value: str | None) -> Callable[[bytes], bytes]:
    def fn(header: dict) -> None:
        if value is None:
            del header["__metadata__"][key]
        else:
            header["__metadata__"][key] = value

    return edit_header(fn)


def edit_json_meta(key: str, fn: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(header: dict) -> None:
        value = json.loads(header["__metadata__"][key])
        fn(value)
        header["__metadata__"][key] = json.dumps(value)

    return edit_header(apply)


def edit_tensors(fn: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[bytes], bytes]:
    """Load the real tensors, change them, and write a correctly framed safetensors file again."""

    def apply(data: bytes) -> bytes:
        header, _ = split(data)
        tensors = st_load(data)
        fn(tensors)
        return st_save(tensors, metadata=header["__metadata__"])

    return apply


def _set(name: str, value: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.__setitem__(name, value)


def _flip_pruned_bit(t: dict[str, torch.Tensor]) -> None:
    bits = np.unpackbits(t["mask.fc1.weight"].numpy(), bitorder="big")
    bits[int(np.flatnonzero(bits[:7500] == 0)[0])] = 1
    t["mask.fc1.weight"] = torch.from_numpy(np.packbits(bits, bitorder="big"))


def _set_padding_bit(t: dict[str, torch.Tensor]) -> None:
    packed = t["mask.fc1.weight"].clone()
    packed[-1] |= 1  # the last bit of the last byte is bit 7503 >= 7500 weights
    t["mask.fc1.weight"] = packed


def _poison(name: str, value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def fn(t: dict[str, torch.Tensor]) -> None:
        v = t[name].clone()
        v[0] = value
        t[name] = v

    return fn


def _rename(old: str, new: str) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, _ = split(data)
        meta = header["__metadata__"]
        for key in ("shapes", "dtypes"):
            d = json.loads(meta[key])
            d[new] = d.pop(old)
            meta[key] = json.dumps(d)
        tensors = st_load(data)
        for prefix in ("init.", "mask."):
            if prefix + old in tensors:
                tensors[prefix + new] = tensors.pop(prefix + old)
        return st_save(tensors, metadata=meta)

    return apply


def _set_offsets(name: str, offsets: object) -> Callable[[bytes], bytes]:
    return edit_header(lambda h: h[name].__setitem__("data_offsets", offsets))


def _garbage_json(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    return data[:8] + b"{not json" + b" " * (n - 9) + data[8 + n :]


MALFORMED: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda d: b"", r"truncated file \(0 bytes"),
    ("four_bytes", lambda d: d[:4], r"truncated file \(4 bytes"),
    ("truncated_mid_data", lambda d: d[: len(d) - 1000], "truncated file: tensor .* ends at byte"),
    ("header_len_beyond_file", lambda d: struct.pack("<Q", len(d)) + d[8:], "truncated file: header claims"),
    ("oversized_header_len", lambda d: struct.pack("<Q", 2**40) + d[8:], "oversized header"),
    ("garbage_json_header", _garbage_json, "garbage header: not valid JSON"),
    ("header_is_list", lambda d: join([1, 2, 3], split(d)[1]), "garbage header: expected a JSON object"),
    (
        "header_entry_not_tensor",
        edit_header(lambda h: h.__setitem__("init.fc1.bias", 5)),
        "not a tensor description",
    ),
    (
        "bad_shape_in_header",
        edit_header(lambda h: h["init.fc1.bias"].__setitem__("shape", [-1])),
        "has shape",
    ),
    (
        "unsupported_dtype",
        edit_header(lambda h: h["init.fc1.bias"].__setitem__("dtype", "F8_E4M3")),
        "unsupported dtype",
    ),
    (
        "dtype_not_a_string",
        edit_header(lambda h: h["init.fc1.bias"].__setitem__("dtype", ["F32"])),
        "unsupported dtype",
    ),
    ("offsets_not_ints", _set_offsets("init.fc1.bias", ["0", "4"]), "has offsets"),
    ("offsets_wrong_length", _set_offsets("init.fc1.bias", [0, 4]), r"byte range \[0, 4\] does not match"),
    ("offsets_negative", _set_offsets("init.fc1.bias", [-4, 1196]), "byte range"),
    ("no_metadata", lambda d: st_save({"weight": torch.ones(3)}), "no ticket metadata"),
    ("unknown_format", edit_meta("format", "other-zoo"), "unknown format 'other-zoo'"),
    ("version_2", edit_meta("format_version", "2"), "unsupported format version '2'.*upgrade"),
    ("missing_field", edit_meta("shapes", None), r"missing field\(s\) \['shapes'\]"),
    ("bad_bitorder", edit_meta("bitorder", "middle"), "unknown mask bit order"),
    ("arch_kwargs_bad_json", edit_meta("arch_kwargs", "{num_classes: 3"), "'arch_kwargs' is not valid JSON"),
    ("arch_kwargs_list", edit_meta("arch_kwargs", "[3]"), "'arch_kwargs' must be a JSON dict"),
    ("meta_bad_json", edit_meta("meta", "{'a': 1}"), "'meta' is not valid JSON"),
    (
        "shapes_dtypes_disagree",
        edit_json_meta("dtypes", lambda d: d.pop("fc1.bias")),
        "name different tensors",
    ),
    (
        "metadata_dtype_unknown",
        edit_json_meta("dtypes", lambda d: d.__setitem__("fc1.bias", "Q7")),
        "unknown dtype 'Q7'",
    ),
    (
        "metadata_dtype_unhashable",
        edit_json_meta("dtypes", lambda d: d.__setitem__("fc1.bias", [1])),
        "unknown dtype",
    ),
    (
        "metadata_shape_invalid",
        edit_json_meta("shapes", lambda d: d.__setitem__("fc1.bias", "300")),
        "metadata shape of 'fc1.bias'",
    ),
    (
        "missing_init_tensor",
        edit_tensors(lambda t: t.pop("init.fc1.bias")),
        r"missing tensor\(s\) \['init.fc1.bias'\]",
    ),
    (
        "missing_init_of_masked",
        edit_tensors(lambda t: t.pop("init.fc1.weight")),
        r"missing tensor\(s\) \['init.fc1.weight'\]",
    ),
    (
        "extra_tensor",
        edit_tensors(_set("init.extra", torch.ones(2))),
        r"unexpected tensor\(s\) \['init.extra'\]",
    ),
    (
        "stray_mask",
        edit_tensors(_set("mask.ghost.weight", torch.zeros(1, dtype=torch.uint8))),
        r"unexpected tensor\(s\) \['mask.ghost.weight'\]",
    ),
    ("missing_mask", edit_tensors(lambda t: t.pop("mask.fc1.weight")), "mask.fc1.weight is missing"),
    (
        "mask_wrong_packed_length",
        edit_tensors(_set("mask.fc1.weight", torch.zeros(937, dtype=torch.uint8))),
        r"must be U8\[938\].*got U8\[937\]",
    ),
    (
        "mask_wrong_dtype",
        edit_tensors(lambda t: t.__setitem__("mask.fc1.weight", t["mask.fc1.weight"].to(torch.int8))),
        r"must be U8\[938\].*got I8",
    ),
    (
        "mask_bool_dtype",
        edit_tensors(lambda t: t.__setitem__("mask.fc1.weight", t["mask.fc1.weight"].bool())),
        r"got BOOL",
    ),
    (
        "masked_init_not_1d",
        edit_tensors(lambda t: t.__setitem__("init.fc1.weight", t["init.fc1.weight"].reshape(1, -1))),
        "must be 1-D kept values",
    ),
    ("masked_init_not_float", lambda d: _int_masked(d), "must be floating point"),
    (
        "init_count_ne_popcount",
        edit_tensors(_flip_pruned_bit),
        r"keeps \d+ weights but init.fc1.weight stores \d+ values",
    ),
    (
        "init_too_many_values",
        edit_tensors(
            lambda t: t.__setitem__(
                "init.head.weight", torch.cat([t["init.head.weight"], t["init.head.weight"][:1]])
            )
        ),
        r"mask.head.weight keeps \d+ weights",
    ),
    ("padding_bits_set", edit_tensors(_set_padding_bit), "bits set beyond its 7500 weights"),
    (
        "dtype_vs_metadata",
        edit_tensors(lambda t: t.__setitem__("init.fc1.bias", t["init.fc1.bias"].half())),
        "init.fc1.bias has dtype F16, metadata says F32",
    ),
    (
        "shape_vs_metadata",
        edit_tensors(lambda t: t.__setitem__("init.fc2.bias", t["init.fc2.bias"][:-1])),
        r"init.fc2.bias has shape \[99\], metadata says \[100\]",
    ),
    (
        "nan_in_kept_values",
        edit_tensors(_poison("init.fc1.weight", float("nan"))),
        r"init.fc1.weight contains non-finite values \(NaN or inf\)",
    ),
    (
        "inf_in_dense_tensor",
        edit_tensors(_poison("init.fc2.bias", float("inf"))),
        "init.fc2.bias contains non-finite",
    ),
    (
        "neg_inf_in_head",
        edit_tensors(_poison("init.head.weight", float("-inf"))),
        "init.head.weight contains non-finite",
    ),
    (
        "unknown_architecture",
        edit_meta("arch", "lenet_301_100"),
        "unknown architecture 'lenet_301_100'.*did you mean",
    ),
    (
        "no_num_classes",
        edit_meta("arch_kwargs", json.dumps({"in_chans": 1, "img_size": 5})),
        "no 'num_classes'",
    ),
    (
        "arch_kwargs_rejected",  # an allowed argument that this architecture does not take
        edit_meta("arch_kwargs", json.dumps({**BASE_KW, "drop_rate": 0.1})),
        "cannot build architecture 'lenet_300_100'",
    ),
    (
        "mask_names_missing_param",
        _rename("fc1.weight", "fc9.weight"),
        "masks do not fit architecture 'lenet_300_100': it has no parameter 'fc9.weight'",
    ),
    (
        "tensor_not_in_arch",
        _rename("fc1.bias", "fc9.bias"),
        r"tensors do not fit architecture .*missing \['fc1.bias'\], extra \['fc9.bias'\]",
    ),
    (
        "shape_vs_architecture",
        edit_meta("arch_kwargs", json.dumps({**BASE_KW, "num_classes": 4})),
        r"'head.bias' is \[3\] in the file but \[4\] in the model|'head.weight' is \[3, 100\] in the file",
    ),
    ("overlapping_offsets", lambda d: _overlap(d), "bad offsets: .*overlaps the previous tensor"),
    ("hole_in_data", lambda d: _hole(d), "bad offsets: .*hole before it"),
    (
        "trailing_garbage",
        lambda d: d + b"\x00" * 16,
        "bad offsets: tensors cover \\d+ bytes but the data section has",
    ),
]


def _int_masked(data: bytes) -> bytes:
    header, _ = split(data)
    meta = header["__metadata__"]
    dtypes = json.loads(meta["dtypes"])
    dtypes["fc1.weight"] = "I32"
    meta["dtypes"] = json.dumps(dtypes)
    tensors = st_load(data)
    tensors["init.fc1.weight"] = tensors["init.fc1.weight"].to(torch.int32)
    return st_save(tensors, metadata=meta)


def _overlap(data: bytes) -> bytes:
    """Point fc2.bias (400 bytes) into fc1.bias's bytes; shapes and dtypes still agree."""
    header, body = split(data)
    start = header["init.fc1.bias"]["data_offsets"][0]
    header["init.fc2.bias"]["data_offsets"] = [start, start + 400]
    return join(header, body)


def _hole(data: bytes) -> bytes:
    """Insert 8 unused bytes before the last tensor and shift its offsets."""
    header, body = split(data)
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    start, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [start + 8, end + 8]
    return join(header, body[:start] + b"\x00" * 8 + body[start:])


# --- hardening: the bigint, depth, size and arch_kwargs classes ---------------------------------------

DIGITS_5000 = "9" * 5000  # json.loads -> int() refuses more than 4300 digits with a plain ValueError


def edit_raw_header(old: str, new: str) -> Callable[[bytes], bytes]:
    """Replace text in the header's JSON itself: for what json.dumps cannot write (a 5000-digit integer)."""

    def apply(data: bytes) -> bytes:
        header, body = split(data)
        text = json.dumps(header)
        assert old in text, old
        raw = text.replace(old, new, 1).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + body

    return apply


def raw_header(text: str) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        raw = text.encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + split(data)[1]

    return apply


def nested_list(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _many_tensors(data: bytes) -> bytes:
    header, body = split(data)
    for i in range(17_000):  # zero-size tensors: a big header, no data
        header[f"init.t{i}"] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    return join(header, body)


# Constructor arguments a ticket must never carry: they load files or weights, are not on the
# allow-list, or are not plain values. Each is refused from a file, through the API and in build().
EVIL_PATH = "/nonexistent/evil.pth"
FORBIDDEN_ARCH_KWARGS: list[tuple[str, dict]] = [
    ("checkpoint_path", {"checkpoint_path": EVIL_PATH}),
    ("pretrained", {"pretrained": True}),
    ("pretrained_false", {"pretrained": False}),
    ("pretrained_cfg_dict", {"pretrained_cfg": {"file": EVIL_PATH}}),
    ("pretrained_cfg_tag", {"pretrained_cfg": "resnet18.a1_in1k"}),
    ("pretrained_cfg_overlay", {"pretrained_cfg_overlay": {"file": EVIL_PATH}}),
    ("pretrained_strict", {"pretrained_strict": False}),
    ("features_only", {"features_only": True}),
    ("cache_dir", {"cache_dir": "/tmp"}),
    ("unknown_key", {"bogus": 1}),
    ("timm_device", {"device": "cuda"}),
    ("timm_dtype", {"dtype": "float64"}),
    ("nested_dict_value", {"drop_rate": {"p": 0.1}}),
    ("nested_list_value", {"img_size": [[5, 5]]}),
    ("list_of_strings", {"img_size": ["5", "5"]}),
    ("long_list", {"img_size": [5] * 5}),
    ("long_string", {"global_pool": "a" * 100}),
    ("path_string", {"global_pool": "/etc/passwd"}),
    ("nan_value", {"drop_rate": float("nan")}),
    ("inf_value", {"drop_rate": float("inf")}),
    ("bool_num_classes", {"num_classes": True}),
    ("float_num_classes", {"num_classes": 3.0}),
    ("negative_in_chans", {"in_chans": -1}),
    ("huge_int", {"num_classes": 10**20}),
]

MALFORMED += [
    # bigint: a number Python cannot even convert must still be a TicketFormatError
    (
        "bigint_in_header",
        edit_raw_header('"data_offsets": [0, ', f'"data_offsets": [{DIGITS_5000}, '),
        "garbage header: not acceptable JSON: an integer has more than 32 digits",
    ),
    (
        "bigint_in_meta",
        edit_meta("meta", '{"seed": ' + DIGITS_5000 + "}"),
        "'meta' is not acceptable JSON: an integer has more than 32 digits",
    ),
    (
        "bigint_in_shapes",
        edit_meta("shapes", '{"fc1.bias": [' + DIGITS_5000 + "]}"),
        "'shapes' is not acceptable JSON",
    ),
    (
        "bigint_in_arch_kwargs",
        edit_meta("arch_kwargs", '{"num_classes": ' + "9" * 4000 + "}"),  # within the field's 4096 chars
        "'arch_kwargs' is not acceptable JSON",
    ),
    (
        "bigint_shape_dim",
        edit_header(lambda h: h["init.fc1.bias"].__setitem__("shape", [10**30])),
        r"byte range .* does not match",
    ),
    # depth: nesting past the recursion limit (RecursionError) and just past our own bound
    (
        "depth_header_100000",
        raw_header("[" * 100_000 + "]" * 100_000),
        "garbage header: not acceptable JSON: nested more than 32 levels deep",
    ),
    (
        "depth_header_40",
        edit_header(lambda h: h["__metadata__"].__setitem__("extra", nested_list(40))),
        "garbage header: not acceptable JSON: nested more than 32 levels deep",
    ),
    (
        "depth_meta_100000",
        edit_meta("meta", '{"a": ' * 100_000 + "1" + "}" * 100_000),
        "'meta' is not acceptable JSON: nested more than 32 levels deep",
    ),
    (
        "depth_meta_40",
        edit_meta("meta", json.dumps({"recipe": nested_list(40)})),
        "'meta' is not acceptable JSON: nested more than 32 levels deep",
    ),
    # size: names, fields and counts are bounded, and no error echoes them whole
    ("size_arch_name_10mb", edit_meta("arch", "a" * 10_000_000), "arch must be a timm model name"),
    ("size_arch_hf_hub", edit_meta("arch", "hf-hub:timm/resnet18"), "arch must be a timm model name"),
    ("size_arch_path", edit_meta("arch", "../../lenet_300_100"), "arch must be a timm model name"),
    (
        "size_meta_field",
        edit_meta("meta", json.dumps({"note": "x" * (1 << 20)})),
        r"metadata field 'meta' is \d+ characters long",
    ),
    (
        "size_meta_source",
        edit_json_meta("meta", lambda m: m.__setitem__("source", "s" * 5000)),
        "meta.source must be a string of at most 1024 characters",
    ),
    (
        "meta_accuracy_not_a_number",
        edit_json_meta("meta", lambda m: m.__setitem__("source_test_acc", "high")),
        "meta.source_test_acc must be an accuracy in percent",
    ),
    ("size_tensor_count", _many_tensors, r"170\d\d tensors \(a ticket has at most 16384\)"),
    (
        "size_json_objects",  # 7.5 GB of dicts from a 64 MB header before
        raw_header('{"__metadata__": {}, "x": [' + "{}," * 200_000 + "{}]}"),
        r"garbage header: 200\d\d\d JSON objects/lists",
    ),
    (
        "size_json_values_in_metadata",
        edit_meta("shapes", "[" + "0," * 600_000 + "0]"),
        r"garbage header: .* and 600\d\d\d values",
    ),
    (
        "size_ndim",
        edit_header(lambda h: h["init.fc1.bias"].__setitem__("shape", [1] * 17)),
        "garbage header: tensor 'init.fc1.bias' has shape",
    ),
    (
        "size_tensor_name",
        edit_header(
            lambda h: h.__setitem__(
                "init." + "x" * 100_000, {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
            )
        ),
        "longer than 512 characters",
    ),
    (
        "metadata_value_not_a_string",
        edit_header(lambda h: h["__metadata__"].__setitem__("arch", ["lenet_300_100"])),
        "metadata field 'arch' must be a string",
    ),
    (
        "masked_init_more_values_than_weights",
        edit_tensors(_set("init.fc1.weight", torch.zeros(7501))),
        "init.fc1.weight stores 7501 kept values but the tensor has only 7500 weights",
    ),
    # arch_kwargs: the allow-list, from the file
    *[
        (
            f"arch_kwargs_{case}",
            edit_meta("arch_kwargs", json.dumps({**BASE_KW, **extra})),
            r"arch_kwargs[:.]",
        )
        for case, extra in FORBIDDEN_ARCH_KWARGS
    ],
]


# Malformed only in the tensor data: a valid header (checked by read_ticket_bytes), bad values.
DATA_LEVEL = {
    "init_count_ne_popcount",
    "init_too_many_values",
    "padding_bits_set",
    "nan_in_kept_values",
    "inf_in_dense_tensor",
    "neg_inf_in_head",
}


def test_at_least_twenty_malformed_cases() -> None:
    assert len(MALFORMED) >= 20
    classes = {case.split("_")[0] for case, _, _ in MALFORMED}
    assert {"bigint", "depth", "size", "arch"} <= classes


def test_base_file_is_valid() -> None:
    """The malformed cases edit this file; it must itself load, so each case hits only its own check."""
    ticket = ticket_from_bytes(base_bytes())
    assert {"fc1.weight", "fc2.weight", "head.weight"} == set(ticket.masks)
    assert ticket.masks["fc1.weight"].numel() % 8 != 0
    # re-framing without any change stays valid (the helpers themselves do not break files)
    ticket_from_bytes(edit_header(lambda h: None)(base_bytes()))
    ticket_from_bytes(edit_tensors(lambda t: None)(base_bytes()))


@pytest.mark.parametrize(("case", "mutate", "match"), MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_malformed_file_raises_format_error(tmp_path: Path, case: str, mutate, match: str) -> None:
    path = tmp_path / "ticket.safetensors"
    data = mutate(base_bytes())
    path.write_bytes(data)
    with pytest.raises(TicketFormatError, match=match) as err:
        tz.load(path)
    # one short line whatever the file holds (10 MB names, 5000-digit numbers are never echoed whole)
    message = str(err.value)
    assert "\n" not in message and len(message) <= len(str(path)) + 400, message[:1000]
    # the same verdict from bytes (the Hub path) and from the bounded byte reader
    with pytest.raises(TicketFormatError, match=match):
        ticket_from_bytes(data)
    if case in DATA_LEVEL:  # the header is fine: the bounded reader hands the bytes over
        assert read_ticket_bytes(path) == data
    else:  # refused from the header alone, before the data is read
        with pytest.raises(TicketFormatError, match=match):
            read_ticket_bytes(path)


# --- nothing a ticket says can make ticket_zoo load a file, weights or talk to the network -------------


@contextlib.contextmanager
def loads_nothing_but(*allowed: Path):
    """Inside: torch.load, pickle, sockets and opening any file outside ``allowed`` raise AssertionError."""
    roots = [Path(p).resolve() for p in allowed]
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if not isinstance(file, int):
            target = Path(os.fsdecode(file)).resolve()
            if not any(target == root or root in target.parents for root in roots):
                raise AssertionError(f"opened {target} while loading a ticket")
        return real_open(file, *args, **kwargs)

    def forbidden(what: str) -> Callable:
        def fn(*args, **kwargs):
            raise AssertionError(f"{what} called while loading a ticket")

        return fn

    class NoUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden("pickle.Unpickler")()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", guarded_open)
        mp.setattr(io, "open", guarded_open)  # pathlib opens through io.open
        mp.setattr(torch, "load", forbidden("torch.load"))
        mp.setattr(pickle, "load", forbidden("pickle.load"))
        mp.setattr(pickle, "loads", forbidden("pickle.loads"))
        mp.setattr(pickle, "Unpickler", NoUnpickler)
        mp.setattr(socket.socket, "connect", forbidden("socket.connect"))
        mp.setattr(socket.socket, "connect_ex", forbidden("socket.connect_ex"))
        mp.setattr(socket, "create_connection", forbidden("socket.create_connection"))
        yield


def test_the_guard_catches_a_checkpoint_path(tmp_path: Path) -> None:
    """The guard is real: timm given checkpoint_path directly (what a ticket file could ask) trips it."""
    import timm

    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(1)}, evil)
    with (
        loads_nothing_but(tmp_path / "ticket.safetensors"),
        pytest.raises(AssertionError, match="while loading"),
    ):
        timm.create_model("lenet_300_100", num_classes=3, checkpoint_path=str(evil))
    with loads_nothing_but(tmp_path / "ticket.safetensors"), pytest.raises(AssertionError, match="opened"):
        (tmp_path / "other.txt").write_text("x")


@pytest.mark.parametrize(("case", "extra"), FORBIDDEN_ARCH_KWARGS, ids=[c for c, _ in FORBIDDEN_ARCH_KWARGS])
def test_forbidden_arch_kwargs_are_refused_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, extra: dict
) -> None:
    import timm

    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(1)}, evil)  # a real checkpoint: loading it would "work"
    extra = {k: str(evil) if v == EVIL_PATH else v for k, v in extra.items()}
    kwargs = {**BASE_KW, **extra}
    valid = ticket_from_bytes(base_bytes())
    path = tmp_path / "ticket.safetensors"
    path.write_bytes(edit_meta("arch_kwargs", json.dumps(kwargs))(base_bytes()))

    def timm_reached(*args, **kwargs):
        raise AssertionError("the arguments reached timm.create_model")

    monkeypatch.setattr(timm, "create_model", timm_reached)  # refused before timm sees them
    with loads_nothing_but(path):
        with pytest.raises(TicketFormatError, match=r"arch_kwargs[:.]") as err:  # a file
            tz.load(path)
        assert len(str(err.value)) <= len(str(path)) + 300
        with pytest.raises(TicketFormatError, match=r"arch_kwargs[:.]"):
            read_ticket_bytes(path)
        with pytest.raises(ConfigError, match=r"arch_kwargs[:.]"):  # the API (recipes go through it too)
            create_model("lenet_300_100", kwargs, device="meta")
        with pytest.raises(ConfigError, match=r"arch_kwargs[:.]"):
            Ticket(arch="lenet_300_100", arch_kwargs=kwargs, masks={}, init=dict(valid.init))
        valid.arch_kwargs.update(extra)  # changed after construction: build() still refuses
        with pytest.raises(ConfigError, match=r"arch_kwargs[:.]"):
            valid.build()


def _embedded_catalogue() -> list[dict]:
    from ticket_zoo import zoo

    cards = Path(__file__).resolve().parent.parent / "cards"
    return [e for e in zoo.list_tickets(published=True, cards_dir=cards) if e["location"] == "embedded"]


EMBEDDED = _embedded_catalogue()
VALID_ARCHS = [
    ("lenet_300_100", {"num_classes": 10, "in_chans": 1, "img_size": 8}),
    ("conv2", {"num_classes": 10, "in_chans": 1, "img_size": 8}),
    ("conv4", {"num_classes": 10, "img_size": [8, 8]}),
    ("conv6", {"num_classes": 10, "img_size": 8}),
    ("vgg11_cifar", {"num_classes": 10}),
    ("vgg16_cifar", {"num_classes": 10}),
    ("vgg19_cifar", {"num_classes": 100}),
    ("resnet20_cifar", {"num_classes": 10, "img_size": 32}),
    ("resnet56_cifar", {"num_classes": 10}),
    ("resnet18", {"num_classes": 10, "in_chans": 1, "drop_rate": 0.2, "global_pool": "avg"}),
    ("vgg11", {"num_classes": 10, "mlp_ratio": 0.015625, "drop_rate": 0.1}),
    ("vit_tiny_patch16_224", {"num_classes": 10, "img_size": 32, "patch_size": 8, "drop_path_rate": 0.1}),
]


def test_valid_archs_cover_every_paper_architecture() -> None:
    from ticket_zoo.models import PAPER_ARCHS

    assert set(PAPER_ARCHS) <= {arch for arch, _ in VALID_ARCHS}
    assert len(EMBEDDED) >= 12


def _check_built(ticket: Ticket, model: torch.nn.Module) -> None:
    state = model.state_dict()
    for name, mask in ticket.masks_for(model).items():
        assert int(state[name][~mask].count_nonzero()) == 0, name


@pytest.mark.parametrize("entry", EMBEDDED, ids=[e["name"] for e in EMBEDDED])
def test_every_embedded_ticket_loads_and_builds_without_loading_anything(entry: dict) -> None:
    from ticket_zoo import zoo

    file = zoo.embedded_dir() / entry["embedded"]
    with loads_nothing_but(file):  # by path: only the ticket file itself may be opened
        ticket = tz.load(file)
        _check_built(ticket, ticket.build())
        _check_built(ticket, ticket.build(num_classes=3))
    with loads_nothing_but(file, zoo.catalogue_dir()):  # by name: plus the catalogue's cards
        assert tz.load(entry["name"]).density == pytest.approx(ticket.density)


@pytest.mark.parametrize(("arch", "kwargs"), VALID_ARCHS, ids=[a for a, _ in VALID_ARCHS])
def test_every_architecture_ticket_loads_and_builds_without_loading_anything(
    tmp_path: Path, arch: str, kwargs: dict
) -> None:
    ticket = make_ticket(arch, kwargs, 0.05)
    path = write_ticket(ticket, tmp_path / "ticket.safetensors")
    with loads_nothing_but(path):
        back = tz.load(path)
        _check_built(back, back.build())
        _check_built(back, back.build(num_classes=3))
    assert_same_ticket(ticket.with_(arch_kwargs=json.loads(json.dumps(ticket.arch_kwargs))), back)


# --- reading is bounded by the ticket, not the file -----------------------------------------------------


def test_huge_sparse_file_is_refused_before_reading(tmp_path: Path) -> None:
    """A valid ticket followed by 40 GiB (a sparse file: no disk used) is refused from its header alone."""
    path = tmp_path / "ticket.safetensors"
    path.write_bytes(base_bytes())
    with open(path, "r+b") as f:
        f.truncate(len(base_bytes()) + 40 * 2**30)
    # were the data read, this would need 40 GiB of memory (MemoryError or the OOM killer)
    with pytest.raises(TicketFormatError, match="trailing garbage"):
        tz.load(path)
    with pytest.raises(TicketFormatError, match="trailing garbage"):
        read_ticket_bytes(path)
    # a header that describes the 40 GiB as a tensor is still refused before reading: not in the architecture
    header, body = split(base_bytes())
    header["init.extra"] = {
        "dtype": "U8",
        "shape": [40 * 2**30],
        "data_offsets": [len(body), len(body) + 40 * 2**30],
    }
    data = join(header, body)
    path.write_bytes(data)
    with open(path, "r+b") as f:
        f.truncate(len(data) + 40 * 2**30)
    with pytest.raises(TicketFormatError, match=r"unexpected tensor\(s\) \['init.extra'\]"):
        tz.load(path)
    with pytest.raises(TicketFormatError, match=r"unexpected tensor\(s\) \['init.extra'\]"):
        read_ticket_bytes(path)


_MEASURE = """
import json, resource, sys
from ticket_zoo.format import read_ticket, TicketFormatError
read_ticket(sys.argv[1])  # warm up: imports, timm registry, allocator
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
for path in sys.argv[2:]:  # in order of growing peaks: ru_maxrss only ever rises
    try:
        ticket = read_ticket(path)
        decoded = sum(t.nbytes for t in [*ticket.init.values(), *ticket.masks.values()])
    except TicketFormatError:
        decoded = 0
    ticket = None
    print(json.dumps({"peak": rss() - base, "decoded": decoded}))
"""


def test_read_memory_is_bounded_by_the_ticket(tmp_path: Path) -> None:
    """Peak memory of read_ticket (ru_maxrss in a fresh process) is the decoded ticket plus one tensor in
    flight: measured 1.08x the decoded ticket (1.3x the file) dense, 1.0x at 5% (2.63x dense before: the
    whole file, then a copy of every tensor, then the decoded ticket), and nothing for a huge file
    refused from its header."""
    warm = tmp_path / "warm.safetensors"
    warm.write_bytes(base_bytes())
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(base_bytes())
    with open(huge, "r+b") as f:
        f.truncate(len(base_bytes()) + 8 * 2**30)  # sparse: no disk used
    sparse_ticket = write_ticket(
        make_ticket("vgg19_cifar", {"num_classes": 100}, 0.05), tmp_path / "s.safetensors"
    )
    dense_ticket = write_ticket(
        make_ticket("vgg19_cifar", {"num_classes": 100}, 1.0), tmp_path / "d.safetensors"
    )
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(warm), str(huge), str(sparse_ticket), str(dense_ticket)],
        capture_output=True,
        text=True,
        # a fixed mmap threshold: glibc's moving one would keep freed blocks resident and blur the peaks
        env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"},
        check=True,
    )
    huge_read, sparse_read, dense_read = (json.loads(line) for line in out.stdout.strip().splitlines()[-3:])
    assert huge_read["decoded"] == 0 and huge_read["peak"] <= 32 * 2**20, huge_read
    for measured, path in ((sparse_read, sparse_ticket), (dense_read, dense_ticket)):
        assert measured["decoded"] >= 0.9 * path.stat().st_size  # decoding never shrinks a ticket
        assert measured["peak"] <= 1.5 * measured["decoded"], (measured, path.stat().st_size)


# --- long names and paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["a" * 300, "a" * 300 + "-digits-5pct", "runs/" + "a" * 300, "x" * 5000])
def test_load_of_an_overlong_name_is_a_short_not_found_error(spec: str) -> None:
    with pytest.raises(TicketNotFoundError) as err:
        tz.load(spec)  # Path.is_dir raised OSError(ENAMETOOLONG) before
    assert "\n" not in str(err.value) and len(str(err.value)) <= 400


def test_shorten_bounds_any_value() -> None:
    assert shorten("abc") == "abc" and shorten(["x"]) == "['x']"
    long = shorten("y" * 10_000_000)
    assert long.startswith("y" * 80) and long.endswith("...[10000000 chars]") and len(long) < 120
    assert shorten("line\nbreak\x1b[31m") == "line?break?[31m"
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert len(shorten(deep)) < 120  # repr raises RecursionError: still a short string


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"source_test_acc": "high"}, "meta.source_test_acc must be an accuracy"),
        ({"recipe": nested_list(40)}, "nested more than 32 levels deep"),
        ({"note": "x" * (1 << 20)}, "'meta' is \\d+ characters long"),
    ],
    ids=["accuracy_text", "depth_40", "size_1mb"],
)
def test_write_refuses_what_read_refuses(tmp_path: Path, meta: dict, match: str) -> None:
    ticket = ticket_from_bytes(base_bytes()).with_(meta=meta)
    with pytest.raises(TicketFormatError, match=match):
        tz.save(ticket, tmp_path / "t")
    assert not (tmp_path / "t" / "ticket.safetensors").exists()
