"""Tests for the ticket file format (format.py), save/load (api.py) and the model card (cards.py)."""

from __future__ import annotations

import json
import os
import pickle
import struct
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
from ticket_zoo.errors import TicketFormatError, TicketNotFoundError
from ticket_zoo.format import FORMAT_VERSION, read_ticket, ticket_from_bytes, ticket_to_bytes, write_ticket
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
    masks = magnitude_masks({n: state[n] for n in names}, density, scope=scope, overrides=overrides)
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
    assert data["datasets"] == ["digits"]
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
        "arch_kwargs_rejected",
        edit_meta("arch_kwargs", json.dumps({**BASE_KW, "bogus": 1})),
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


def test_at_least_twenty_malformed_cases() -> None:
    assert len(MALFORMED) >= 20


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
    path.write_bytes(mutate(base_bytes()))
    with pytest.raises(TicketFormatError, match=match):
        tz.load(path)
