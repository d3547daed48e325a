"""Model metadata: everything besides the weights that a checkpoint needs to be used correctly.

Stored as ``meta.json`` next to ``model.safetensors`` in vcat's model store. The video pipeline
reads preprocessing and sampling from here, never from hard-coded constants.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMAT_VERSION = 1


@dataclass
class ModelMeta:
    name: str
    arch: str  # "resnet18" | "resnet50" | "resnet101" | "mobilenetv2"
    num_segments: int  # T: frames per clip
    labels: list[str]
    shift: bool = True  # False: plain TSN (the baseline)
    shift_div: int = 8
    shift_place: str = "blockres"  # "blockres" | "block"
    online: bool = False  # one-way (causal) shift, streaming model
    input_size: int = 224  # centre-crop side fed to the network
    resize_short: int = 256  # short side before the crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Clip windows used when indexing, in seconds; T frames are sampled at segment centres.
    window_seconds: float = 2.0
    stride_seconds: float = 2.0
    version: str = "1"
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model metadata fields: {sorted(unknown)}")
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> ModelMeta:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")
