"""Strict, safe checkpoint loading: the TSM authors' files, mmaction2's TSM files, vcat's format.

External files are read with ``torch.load(weights_only=True)`` (no arbitrary pickles), converted
to vcat's key layout (``backbone.*``, ``head.*``) and loaded strictly: any missing, unexpected or
mis-shaped key raises :class:`CheckpointError` naming the keys. BatchNorm ``num_batches_tracked``
counters are the only keys treated as optional (they do not affect inference; old files lack them).

vcat's format is a directory with ``model.safetensors`` and ``meta.json`` (:class:`ModelMeta`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from worker.tsm.meta import ModelMeta
from worker.tsm.recognizer import Recognizer, build_model
from worker.tsm.resnet import DEPTHS
from worker.tsm.shift import MOBILENETV2_SHIFTED, resnet_shift_targets

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
_OPTIONAL = "num_batches_tracked"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, wrong layout, or mismatched keys."""


def _short(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# ---------------------------------------------------------------------------------------- reading


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``torch.save`` file (a state dict, or a dict with ``state_dict``/``model``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False: wrong for a file from the network.
        raise CheckpointError(
            f"{path.name}: not a PyTorch checkpoint of plain tensors (vcat never unpickles "
            "other objects)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path.name}: unreadable or truncated checkpoint ({_first_line(exc)})"
        ) from exc
    except Exception as exc:  # junk bytes can fail the unpickler anywhere (KeyError, ...)
        raise CheckpointError(
            f"{path.name}: not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path.name}: does not contain a state dict (got {type(obj).__name__})"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path.name}: state dict has non-tensor entries: {_short(bad)}")
    return obj


# -------------------------------------------------------------------------------- strict loading


def load_state_strict(
    model: nn.Module, state: dict[str, Tensor], source: str = "checkpoint"
) -> None:
    """Load ``state`` into ``model``; every missing / unexpected / mis-shaped key is an error."""
    expected = model.state_dict()
    required = {k for k in expected if not k.endswith(_OPTIONAL)}
    given = {k for k in state if not k.endswith(_OPTIONAL)}
    missing = sorted(required - given)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in given & required
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped: {_short(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))
    full = {k: state.get(k, v) for k, v in expected.items()}
    model.load_state_dict(full, strict=True)


# -------------------------------------------------------------------------------- architecture


@dataclass
class ArchInfo:
    arch: str
    num_classes: int
    shift: bool
    shift_place: str


def infer_arch(state: dict[str, Tensor]) -> ArchInfo:
    """Architecture of a state dict in vcat's layout, read from its tensors."""
    if "head.weight" not in state:
        raise CheckpointError("no classifier weights (head) found")
    num_classes = int(state["head.weight"].shape[0])
    keys = list(state)
    if any(k.startswith("backbone.features.") for k in keys):
        shifted = {
            int(m.group(1))
            for k in keys
            if (m := re.match(r"backbone\.features\.(\d+)\.conv\.0\.net\.", k))
        }
        if shifted and shifted != set(MOBILENETV2_SHIFTED):
            raise CheckpointError(
                f"MobileNetV2 shifted blocks {sorted(shifted)} are not the authors'"
            )
        return ArchInfo("mobilenetv2", num_classes, bool(shifted), "blockres")
    blocks: dict[int, int] = {}
    for k in keys:
        if m := re.match(r"backbone\.layer([1-4])\.(\d+)\.", k):
            s, b = int(m.group(1)), int(m.group(2))
            blocks[s] = max(blocks.get(s, -1), b + 1)
    if len(blocks) != 4:
        raise CheckpointError("not a ResNet or MobileNetV2 state dict (no layer1..layer4 blocks)")
    counts = [blocks[s] for s in (1, 2, 3, 4)]
    bottleneck = any(".conv3." in k for k in keys)
    arch = next(
        (a for a, (blk, n) in DEPTHS.items() if n == counts and (blk.expansion == 4) == bottleneck),
        None,
    )
    if arch is None:
        raise CheckpointError(f"unsupported ResNet: blocks per stage {counts}")
    block_shift = any(re.match(r"backbone\.layer\d\.\d+\.net\.", k) for k in keys)
    res_shift = {
        (int(m.group(1)) - 1, int(m.group(2)))
        for k in keys
        if (m := re.match(r"backbone\.layer(\d)\.(\d+)\.conv1\.net\.", k))
    }
    if block_shift:
        return ArchInfo(arch, num_classes, True, "block")
    if res_shift and res_shift != set(resnet_shift_targets(counts)):
        raise CheckpointError(f"{arch}: shifted blocks do not follow the blockres rule")
    return ArchInfo(arch, num_classes, bool(res_shift), "blockres")


# ------------------------------------------------------------------------------ external formats


_AUTHORS_NAME = re.compile(
    r"^TSM_(?P<dataset>[A-Za-z0-9]+)_(?P<modality>RGB|Flow)_(?P<arch>[a-z0-9]+)"
    r"(?:_shift(?P<div>\d+)_(?P<place>blockres|block))?_(?P<consensus>[a-z]+)"
    r"_segment(?P<segments>\d+)_e(?P<epochs>\d+)(?P<rest>(?:_[a-z]+)*)\.pth(?:\.tar)?$"
)


@dataclass
class AuthorsName:
    dataset: str
    arch: str
    shift: bool
    shift_div: int
    shift_place: str
    num_segments: int
    dense: bool


def parse_authors_filename(name: str) -> AuthorsName:
    """Parse ``TSM_{dataset}_RGB_{arch}[_shift{div}_{place}]_avg_segment{T}_e{N}[_dense].pth``."""
    m = _AUTHORS_NAME.match(name)
    if not m:
        raise CheckpointError(f"{name}: not a TSM authors' checkpoint name")
    if m["modality"] != "RGB":
        raise CheckpointError(f"{name}: only RGB models are supported, not {m['modality']}")
    if m["consensus"] != "avg":
        raise CheckpointError(f"{name}: only avg consensus is supported, not {m['consensus']}")
    if "_nl" in m["rest"]:
        raise CheckpointError(f"{name}: non-local TSM variants are not supported")
    return AuthorsName(
        dataset=m["dataset"], arch=m["arch"], shift=m["div"] is not None,
        shift_div=int(m["div"] or 8), shift_place=m["place"] or "blockres",
        num_segments=int(m["segments"]), dense="_dense" in m["rest"],
    )  # fmt: skip


# The named label maps (``worker.tsm.store.LABEL_URLS``) whose class order each checkpoint family
# was trained with; None: none of them (Something V1, and the online demo's own Jester order).
_AUTHORS_DATASETS: dict[str, str | None] = {
    "kinetics": "kinetics400", "somethingv2": "somethingv2", "something": None, "jester": None,
}  # fmt: skip
_MMACTION_DATASETS = {"kinetics400": "kinetics400", "sthv2": "somethingv2", "jester": "jester"}
# mmaction2 names carry ``{clip_len}x{frame_interval}x{num_clips}``; TSM's T is num_clips.
_MMACTION_FRAMES = re.compile(r"(?:^|[_-])\d+x\d+x(\d+)(?=[_-]|$)")


def _mmaction_name(name: str) -> tuple[int | None, str | None]:
    """(T, the named label map of its dataset) from an mmaction2 file name; None: not in it."""
    m = _MMACTION_FRAMES.search(name)
    tokens = set(re.split(r"[_.-]", name.lower()))
    known = [v for k, v in _MMACTION_DATASETS.items() if k in tokens]
    return (int(m.group(1)) if m else None), (known[0] if known else None)


def _check_label_map(source: str, label_map: str, trained_on: str | None, what: str) -> None:
    if label_map == trained_on:
        return
    needs = (f"the {trained_on!r} map" if trained_on
             else "a label file in its own class order (--labels PATH)")  # fmt: skip
    raise CheckpointError(
        f"{source}: a {what} model; the {label_map!r} label map has other classes or another "
        f"class order: it needs {needs}"
    )


def convert_authors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Authors' keys: ``module.base_model.*`` -> ``backbone.*``; ``new_fc`` or base fc -> head."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        if k.startswith("new_fc."):
            k = "head." + k.removeprefix("new_fc.")
        elif m := re.match(r"base_model\.(fc|classifier)\.(weight|bias)$", k):
            k = f"head.{m.group(2)}"
        elif k.startswith("base_model."):
            k = "backbone." + k.removeprefix("base_model.")
        else:
            raise CheckpointError(f"not a TSM authors' state dict: unexpected key {key!r}")
        out[k] = value
    return out


def convert_online(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The authors' online demo state dict (``features.*``, ``classifier.*``) -> vcat layout."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            out["head." + key.removeprefix("classifier.")] = value
            continue
        m = re.match(r"features\.(\d+)\.conv\.0\.(.+)$", key)
        if m and int(m.group(1)) in MOBILENETV2_SHIFTED:
            out[f"backbone.features.{m.group(1)}.conv.0.net.{m.group(2)}"] = value
        elif key.startswith("features."):
            out["backbone." + key] = value
        else:
            raise CheckpointError(f"not a MobileNetV2 online state dict: unexpected key {key!r}")
    return out


def convert_mmaction(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """mmaction2 ResNet-TSM (``backbone.layer1.0.conv1.conv.net.weight``, ``cls_head.fc_cls``)."""
    if any(re.match(r"backbone\.layer\d+\.\d+\.conv\.\d+\.", k) for k in state):
        # mmaction2's MobileNetV2 (ConvModules in layer1..7): its layout was never checked
        # against a published file, so it is refused rather than guessed.
        raise CheckpointError(
            "mmaction2 MobileNetV2-TSM checkpoints are not supported (mmaction2 ResNet-TSM and "
            "the TSM authors' MobileNetV2 files are)"
        )
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("cls_head.fc_cls."):
            out["head." + key.removeprefix("cls_head.fc_cls.")] = value
            continue
        if not key.startswith("backbone."):
            raise CheckpointError(f"not an mmaction2 TSM state dict: unexpected key {key!r}")
        k = key.removeprefix("backbone.")
        k = re.sub(r"(^|\.)conv(\d)\.conv\.", r"\1conv\2.", k)
        k = re.sub(r"(^|\.)conv(\d)\.bn\.", r"\1bn\2.", k)
        k = re.sub(r"\.downsample\.conv\.", ".downsample.0.", k)
        k = re.sub(r"\.downsample\.bn\.", ".downsample.1.", k)
        out["backbone." + k] = value
    return out


def detect_format(state: dict[str, Tensor]) -> str:
    """ "authors" | "mmaction2" | "online" | "vcat", from the key names."""
    keys = list(state)
    if all(k.startswith(("module.", "base_model.", "new_fc.")) for k in keys):
        return "authors"
    if any(k.startswith("cls_head.") for k in keys):
        return "mmaction2"
    if all(k.startswith(("features.", "classifier.")) for k in keys):
        return "online"
    if all(k.startswith(("backbone.", "head.")) for k in keys):
        return "vcat"
    raise CheckpointError(f"unrecognised checkpoint layout (first keys: {_short(sorted(keys), 4)})")


def import_external(
    path: Path,
    labels: list[str],
    name: str,
    num_segments: int | None = None,
    label_map: str | None = None,
) -> tuple[Recognizer, ModelMeta]:
    """Load an authors' / mmaction2 / online-demo checkpoint strictly; returns (model, meta).

    For authors' files the architecture in the file name must agree with the tensors. T comes from
    ``num_segments``, else the file name (the authors' ``segment8``, mmaction2's ``1x1x8``);
    when neither gives it, it must be passed. ``label_map``: the named public map ``labels``
    came from (None for a file); refused when the file name says the model was trained on
    another dataset or class order (Jester's 27 classes come in two orders, for one).
    """
    path = Path(path)
    state = read_state_dict(path)
    fmt = detect_format(state)
    converters: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
        "authors": convert_authors,
        "mmaction2": convert_mmaction,
        "online": convert_online,
        "vcat": dict,
    }
    converted = converters[fmt](state)
    info = infer_arch(converted)
    shift_div, segments = 8, num_segments
    if fmt == "online":
        segments = segments or 8  # the online network shifts frame by frame: T is nominal
        if label_map is not None:
            _check_label_map(path.name, label_map, None, "TSM online demo (its own Jester order)")
    elif fmt == "mmaction2":
        frames, trained_on = _mmaction_name(path.name)
        segments = segments or frames
        if label_map is not None and trained_on is not None:
            _check_label_map(path.name, label_map, trained_on, f"mmaction2 {trained_on}")
    elif fmt == "authors":
        try:
            named = parse_authors_filename(path.name)
        except CheckpointError:
            named = None
        if named is not None:
            claimed = (named.arch, named.shift, named.shift_place if named.shift else "blockres")
            if claimed != (info.arch, info.shift, info.shift_place):
                raise CheckpointError(
                    f"{path.name}: name says {named.arch} shift={named.shift} "
                    f"{named.shift_place}, tensors say {info.arch} shift={info.shift} "
                    f"{info.shift_place}"
                )
            shift_div = named.shift_div
            segments = segments or named.num_segments
            if label_map is not None and named.dataset in _AUTHORS_DATASETS:
                trained = _AUTHORS_DATASETS[named.dataset]
                _check_label_map(path.name, label_map, trained, f"TSM {named.dataset}")
    if segments is None:
        raise CheckpointError(
            f"{path.name}: frames per clip (T) is not in the file name; pass it (--segments)"
        )
    if info.num_classes != len(labels):
        raise CheckpointError(
            f"{path.name}: classifier has {info.num_classes} classes, label file has {len(labels)}"
        )
    meta = ModelMeta(
        name=name, arch=info.arch, num_segments=segments, labels=list(labels),
        shift=info.shift, shift_div=shift_div, shift_place=info.shift_place,
        online=fmt == "online",
        provenance={"source": path.name, "format": fmt},
    )  # fmt: skip
    model = build_model(meta)
    load_state_strict(model, converted, path.name)
    return model.eval(), meta


# ---------------------------------------------------------------------------------- vcat format


def save_vcat(model: Recognizer, meta: ModelMeta, directory: Path) -> Path:
    """Write ``model.safetensors`` + ``meta.json`` into ``directory`` (created)."""
    directory = Path(directory)
    if model.head.out_features != meta.num_classes:
        raise CheckpointError(
            f"model has {model.head.out_features} classes, metadata {meta.num_classes} labels"
        )
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "vcat-tsm"})
    meta.save(directory / META_FILE)
    return directory


def load_vcat(directory: Path) -> tuple[Recognizer, ModelMeta]:
    """Load a vcat model directory strictly; returns (model in eval mode, meta)."""
    directory = Path(directory)
    for f in (WEIGHTS_FILE, META_FILE):
        if not (directory / f).is_file():
            raise CheckpointError(f"{directory}: missing {f}")
    try:
        meta = ModelMeta.load(directory / META_FILE)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory / META_FILE}: invalid model metadata ({exc})") from exc
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: unreadable ({exc})") from exc
    try:
        model = build_model(meta)
    except ValueError as exc:  # an arch, placement or size the metadata cannot have
        raise CheckpointError(f"{directory / META_FILE}: invalid model metadata ({exc})") from None
    load_state_strict(model, state, str(directory / WEIGHTS_FILE))
    return model.eval(), meta
