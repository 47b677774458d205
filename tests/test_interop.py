"""ticket_zoo with the rest of the ecosystem: timm's registry on import, tab completion, tickets from
timm models without restating their arguments, torch.nn.utils.prune both ways, and mask overlap
across different heads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import timm
import torch
from torch.nn.utils import prune

import ticket_zoo as tz
from ticket_zoo.errors import ConfigError
from ticket_zoo.masks import magnitude_masks, mask_overlap, prunable_weights
from ticket_zoo.models import PAPER_ARCHS
from ticket_zoo.ticket import Ticket, infer_arch

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*parts: str) -> subprocess.CompletedProcess:
    """Run the code ``parts`` in a fresh interpreter (imports start from nothing); fail with its stderr."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# --- 1. the paper architectures are in timm's registry after `import ticket_zoo` ---------------------

_CHECK_REGISTERED = f"""
    missing = sorted(set({PAPER_ARCHS!r}) - set(timm.list_models()))
    assert not missing, missing
    assert timm.create_model("conv4").__class__.__name__ == "ConvNet"
    assert {{"conv2", "conv4", "conv6"}} <= set(timm.list_models("conv*"))
    assert not [f for f in sys.meta_path if getattr(f, "_ticket_zoo_timm_hook", False)], "hook left behind"
    assert type(timm.__spec__.loader).__module__ != "ticket_zoo", timm.__spec__.loader  # no wrapper left
    assert timm.__loader__ is timm.__spec__.loader
"""


def test_import_ticket_zoo_then_timm_registers_the_paper_archs():
    _run(
        """
        import sys
        import ticket_zoo
        assert "torch" not in sys.modules and "timm" not in sys.modules
        import timm
        """,
        _CHECK_REGISTERED,
    )


def test_import_timm_then_ticket_zoo_registers_the_paper_archs():
    _run(
        """
        import sys
        import timm
        assert not timm.is_model("conv4")
        import ticket_zoo
        """,
        _CHECK_REGISTERED,
    )


def test_import_timm_models_submodule_first_also_registers():
    _run(
        """
        import sys
        import ticket_zoo
        from timm.models import is_model
        import timm
        assert is_model("lenet_300_100")
        """,
        _CHECK_REGISTERED,
    )


def test_import_ticket_zoo_models_directly_registers_once_without_overwrite_warnings():
    # ticket_zoo.models imports timm itself: the hook fires inside that import and must not import
    # the half-initialised module again; a reload re-registers silently (no "Overwriting" warning).
    _run(
        """
        import importlib, sys, warnings
        warnings.simplefilter("error")
        import ticket_zoo.models
        import timm
        assert timm.is_model("resnet56_cifar")
        importlib.reload(ticket_zoo.models)
        importlib.reload(sys.modules["ticket_zoo"])  # does not install a second hook
        assert timm.list_models("lenet*") == ["lenet_300_100"]
        """
    )


def test_import_ticket_zoo_alone_stays_light_and_installs_one_hook():
    out = _run(
        """
        import importlib, sys
        import ticket_zoo
        importlib.reload(ticket_zoo)
        hooks = [f for f in sys.meta_path if getattr(f, "_ticket_zoo_timm_hook", False)]
        print(len(hooks), any(m in sys.modules for m in ("torch", "timm", "datasets")))
        """
    ).stdout
    assert out.split() == ["1", "False"]


def test_a_failing_registration_does_not_break_import_timm():
    # ticket_zoo.models cannot be imported (a finder refuses it): `import timm` still works, the
    # architectures are simply not registered, and the reason is logged at debug level.
    done = _run(
        """
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name == "ticket_zoo.models":
                    raise ImportError("refused for the test")
                return None

        import ticket_zoo
        sys.meta_path.append(Refuse())
        sys.meta_path.insert(1, sys.meta_path.pop())  # right after the hook
        import timm
        assert timm.create_model("resnet18", num_classes=2).__class__.__name__ == "ResNet"
        assert not timm.is_model("conv4")
        assert not [f for f in sys.meta_path if getattr(f, "_ticket_zoo_timm_hook", False)]
        """
    )
    assert "ticket_zoo DEBUG could not register the paper architectures with timm" in done.stderr
    assert "refused for the test" in done.stderr


# --- 2. dir(ticket_zoo) shows the lazy names -----------------------------------------------------------


def test_dir_lists_every_public_name_before_first_use():
    out = _run(
        """
        import ticket_zoo
        print("Ticket" in vars(ticket_zoo), " ".join(dir(ticket_zoo)))
        """
    ).stdout.split()
    loaded, names = out[0], set(out[1:])
    assert loaded == "False"  # still lazy: dir() lists it without importing it
    assert set(tz.__all__) <= names
    assert {"load", "save", "Ticket", "find_tickets", "mask_overlap", "__version__"} <= names
    assert not {"sys", "import_module", "TYPE_CHECKING", "annotations", "_LAZY"} & names  # no helpers
    assert set(tz.__all__) <= set(dir(tz))  # in this process too


# --- 3. Ticket.from_model infers arch and arch_kwargs from a timm model -----------------------------


def _masks(model: torch.nn.Module, density: float = 0.3) -> dict[str, torch.Tensor]:
    return magnitude_masks(prunable_weights(model), density)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("arch", "kwargs", "expected"),
    [
        (
            "conv4",
            {"num_classes": 3, "in_chans": 1, "img_size": 8},
            {"num_classes": 3, "in_chans": 1, "img_size": 8},
        ),
        (
            "lenet_300_100",
            {"num_classes": 4, "img_size": (6, 8)},
            {"num_classes": 4, "in_chans": 1, "img_size": [6, 8]},
        ),
        ("resnet18", {"num_classes": 7, "in_chans": 1}, {"num_classes": 7, "in_chans": 1}),
        (
            "vit_tiny_patch16_224",
            {"num_classes": 3, "img_size": 32},
            {"num_classes": 3, "in_chans": 3, "img_size": 32},
        ),
    ],
)
def test_from_model_infers_arch_and_kwargs(arch: str, kwargs: dict, expected: dict) -> None:
    torch.manual_seed(0)
    model = timm.create_model(arch, **kwargs)
    ticket = Ticket.from_model(model, _masks(model))
    assert (ticket.arch, ticket.arch_kwargs) == (arch, expected)
    rebuilt = ticket.build()  # the inferred arguments rebuild this very network
    pruned = model.state_dict()
    for name, mask in ticket.masks.items():
        pruned[name] = pruned[name] * mask
    assert rebuilt.state_dict().keys() == pruned.keys()
    assert all(torch.equal(rebuilt.state_dict()[k], pruned[k]) for k in pruned)
    # given arguments win over inferred ones; a missing num_classes is filled in
    assert (
        Ticket.from_model(
            model, {}, arch_kwargs={k: v for k, v in expected.items() if k != "num_classes"}
        ).num_classes
        == expected["num_classes"]
    )


def test_from_model_follows_a_replaced_head() -> None:
    from ticket_zoo.models import replace_head

    model = replace_head(timm.create_model("conv2", num_classes=10, img_size=4), num_classes=6)
    assert Ticket.from_model(model, {}).arch_kwargs["num_classes"] == 6


def test_from_model_asks_when_the_model_does_not_say() -> None:
    plain = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(
        ConfigError,
        match=r"cannot tell which timm architecture this Sequential is .*pass arch= and arch_kwargs=",
    ):
        Ticket.from_model(plain, {})
    # with the arch named, the classes are still unknown: one error naming num_classes
    with pytest.raises(ConfigError, match=r"cannot tell how many classes .*arch_kwargs=\{'num_classes'"):
        Ticket.from_model(plain, {}, arch="lenet_300_100")
    # a timm model built with arguments it does not show (depth) is not guessed wrong
    shallow = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32, depth=2)
    with pytest.raises(
        ConfigError, match=r"is not 'vit_tiny_patch16_224' built with .*constructor arguments"
    ):
        infer_arch(shallow)
    # ... and passing them works (depth is on the allow-list)
    ticket = Ticket.from_model(shallow, {}, arch_kwargs={"num_classes": 3, "img_size": 32, "depth": 2})
    assert ticket.arch == "vit_tiny_patch16_224" and len(ticket.build().blocks) == 2


def test_from_model_keeps_the_arch_kwargs_allow_list() -> None:
    model = timm.create_model("conv2", num_classes=10, img_size=4)
    with pytest.raises(ConfigError, match="'checkpoint_path' is not allowed"):
        Ticket.from_model(model, {}, arch_kwargs={"num_classes": 10, "checkpoint_path": "/tmp/x.pth"})
    with pytest.raises(ConfigError, match="'pretrained' is not allowed"):
        infer_arch(model, arch_kwargs={"pretrained": True})
    with pytest.raises(ConfigError, match="arch must be a timm model name"):
        Ticket.from_model(model, {}, arch="hf-hub:someone/evil")


# --- 4. torch.nn.utils.prune, both ways ------------------------------------------------------------------


def _lenet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=8)


def test_prune_round_trip_from_pruned_then_apply_to_prune_style() -> None:
    source = _lenet(0)
    prune.l1_unstructured(source.fc1, "weight", amount=0.8)
    prune.l1_unstructured(source.fc2, "weight", amount=0.5)
    prune.l1_unstructured(source.fc2, "weight", amount=0.2)  # a second round: a PruningContainer
    ticket = Ticket.from_pruned(source, meta={"source": "unit"})
    assert ticket.arch == "lenet_300_100" and sorted(ticket.masks) == ["fc1.weight", "fc2.weight"]
    assert ticket.arch_kwargs == {"num_classes": 10, "in_chans": 1, "img_size": 8}
    assert torch.equal(ticket.masks["fc1.weight"], source.fc1.weight_mask.bool())
    assert ticket.layer_densities["fc1.weight"] == pytest.approx(0.2, abs=1e-3)
    # the rewind state is weight_orig as it is now, masked
    assert torch.equal(ticket.init["fc1.weight"], source.fc1.weight_orig.detach() * source.fc1.weight_mask)
    assert "fc1.weight_orig" not in ticket.init and "fc1.weight_mask" not in ticket.init
    assert hasattr(source.fc1, "weight_orig")  # the source model is untouched

    fresh = _lenet(1)
    out = ticket.apply_to(fresh, style="prune")
    assert out is fresh
    for layer in ("fc1", "fc2"):
        got, want = getattr(fresh, layer), getattr(source, layer)
        assert torch.equal(got.weight_mask, want.weight_mask), layer
        assert torch.equal(got.weight, want.weight), layer  # the effective weights
        assert torch.equal(got.bias, want.bias), layer
    assert not hasattr(fresh.head, "weight_mask")  # only what was pruned gets a mask
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(fresh(x), source(x))
    # and back again: the same ticket
    again = Ticket.from_pruned(fresh)
    assert again.masks.keys() == ticket.masks.keys()
    assert all(torch.equal(again.masks[k], ticket.masks[k]) for k in ticket.masks)
    assert all(torch.equal(again.init[k], ticket.init[k]) for k in ticket.init)
    # code built on prune can finish the job
    for layer in ("fc1", "fc2"):
        prune.remove(getattr(fresh, layer), "weight")
    assert torch.equal(fresh(x), source(x)) and not hasattr(fresh.fc1, "weight_orig")


def test_from_pruned_survives_save_and_load(tmp_path) -> None:
    source = _lenet(0)
    prune.global_unstructured(
        [(source.fc1, "weight"), (source.fc2, "weight")], pruning_method=prune.L1Unstructured, amount=0.9
    )
    ticket = Ticket.from_pruned(source, meta={"source": "unit"})
    tz.save(ticket, tmp_path / "t")
    back = tz.load(str(tmp_path / "t"))
    model = back.apply_to(_lenet(3), style="prune")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), source(x))


def test_from_pruned_init_state_is_the_rewind_point() -> None:
    model = _lenet(0)
    rewind = {k: v.clone() for k, v in model.state_dict().items()}  # θ0, before "training"
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    ticket = Ticket.from_pruned(model, init_state=rewind)
    mask = model.fc1.weight_mask.bool()
    assert torch.equal(ticket.init["fc1.weight"], rewind["fc1.weight"] * mask)
    assert torch.equal(ticket.init["fc2.weight"], rewind["fc2.weight"])
    # an init_state in prune's own names works as well
    pruned_names = {k: v.clone() for k, v in model.state_dict().items()}
    same = Ticket.from_pruned(model, init_state=pruned_names)
    assert torch.equal(same.init["fc1.weight"], model.fc1.weight.detach())


def test_apply_to_masks_style_zeroes_in_place_and_matches_build() -> None:
    ticket = tz.load("lenet_300_100-digits04-5pct")
    model = timm.create_model(ticket.arch, **ticket.arch_kwargs)
    ticket.apply_to(model)  # style="masks": plain parameters, pruned entries exactly zero
    assert not hasattr(model.fc1, "weight_mask")
    assert _same_state(model, ticket.build())
    assert bool((model.fc1.weight[~ticket.masks["fc1.weight"]] == 0).all())


def test_apply_to_a_model_with_another_head_keeps_that_head_dense() -> None:
    ticket = tz.load("lenet_300_100-digits04-5pct")  # 5 classes, head pruned
    model = timm.create_model(ticket.arch, **{**ticket.arch_kwargs, "num_classes": 10})
    head = model.head.weight.detach().clone()
    ticket.apply_to(model, style="prune")
    assert sorted(n for n, _ in model.named_buffers() if n.endswith("_mask")) == [
        "fc1.weight_mask",
        "fc2.weight_mask",
    ]
    assert torch.equal(model.head.weight, head)  # its own (fresh) head, unmasked
    assert torch.equal(model.fc1.weight, ticket.init["fc1.weight"])


def test_apply_to_refuses_what_does_not_fit() -> None:
    ticket = tz.load("lenet_300_100-digits04-5pct")
    with pytest.raises(ConfigError, match="style must be 'masks' or 'prune'"):
        ticket.apply_to(timm.create_model(ticket.arch, **ticket.arch_kwargs), style="hooks")
    wrong = timm.create_model(ticket.arch, **{**ticket.arch_kwargs, "img_size": 6})
    with pytest.raises(
        ConfigError, match=r"does not fit this 'lenet_300_100' ticket: 'fc1.weight' is \(300, 64\)"
    ):
        ticket.apply_to(wrong)
    with pytest.raises(
        ConfigError, match="does not fit this 'lenet_300_100' ticket: it has 'features.0.weight'"
    ):
        ticket.apply_to(timm.create_model("conv2", num_classes=5, img_size=4), style="prune")
    pruned = ticket.apply_to(timm.create_model(ticket.arch, **ticket.arch_kwargs), style="prune")
    with pytest.raises(ConfigError, match=r"already pruned with torch.nn.utils.prune \(fc1.weight"):
        ticket.apply_to(pruned, style="prune")


def test_from_pruned_refuses_unpruned_models_and_soft_masks() -> None:
    model = _lenet(0)
    with pytest.raises(ConfigError, match="no torch.nn.utils.prune masks.*Ticket.from_model"):
        Ticket.from_pruned(model)
    prune.custom_from_mask(model.fc1, "weight", torch.ones_like(model.fc1.weight))
    with torch.no_grad():
        model.fc1.weight_mask[0, 0] = 0.5
    with pytest.raises(ConfigError, match="fc1.weight_mask holds values other than 0 and 1"):
        Ticket.from_pruned(model)


# --- 5. mask_overlap across different heads --------------------------------------------------------


def _conv_ticket(num_classes: int, seed: int) -> Ticket:
    torch.manual_seed(seed)
    model = timm.create_model("conv2", num_classes=num_classes, img_size=4)
    masks = magnitude_masks(prunable_weights(model, prune_head=True), 0.3)
    return Ticket.from_model(model, masks)


def test_mask_overlap_compares_the_shared_layers_of_tickets_with_different_heads() -> None:
    ten, five = _conv_ticket(10, 0), _conv_ticket(5, 1)
    with pytest.warns(
        UserWarning,
        match=r"compared 4 shared layers and skipped head.weight \(shape \(10, 256\) vs \(5, 256\)\)",
    ):
        out = mask_overlap(ten, five)  # tickets or their masks
    assert out["skipped"] == {"head.weight": "shape (10, 256) vs (5, 256)"}
    body = {k: v for k, v in ten.masks.items() if k != "head.weight"}
    other = {k: v for k, v in five.masks.items() if k != "head.weight"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: no warning, no "skipped" key
        same_layers = mask_overlap(body, other)
    assert same_layers == {"layers": out["layers"], "overall": out["overall"]}
    assert sorted(out["layers"]) == sorted(body) and 0 < out["overall"] < 1
    with pytest.raises(ConfigError, match=r"masks cover different layers: head.weight \(shape"):
        mask_overlap(ten.masks, five.masks, strict=True)


def test_mask_overlap_layers_only_in_one_are_skipped_and_nothing_shared_is_an_error() -> None:
    a = {"x": torch.tensor([True, False]), "y": torch.tensor([True, True])}
    b = {"x": torch.tensor([True, True]), "z": torch.tensor([False])}
    with pytest.warns(UserWarning, match="skipped y"):
        out = mask_overlap(a, b)
    assert out == {
        "layers": {"x": 0.5},
        "overall": 0.5,
        "skipped": {"y": "only in the first", "z": "only in the second"},
    }
    with pytest.raises(ConfigError, match=r"no layer in common: y \(only in the first\), z"):
        mask_overlap({"y": a["y"]}, {"z": b["z"]})
