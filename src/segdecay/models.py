"""Model factory: any segmentation_models_pytorch architecture/encoder, optional dropout.

Nothing is downloaded: encoders start from random weights unless the user names
``--encoder-weights`` (and then smp fetches them, which needs a network).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from segdecay.errors import UserError


def architectures() -> list[str]:
    """Architecture names smp accepts (lower case), e.g. unet, fpn, deeplabv3plus."""
    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


class DropoutHead(nn.Module):
    """Dropout2d on the decoder features, then the original segmentation head."""

    def __init__(self, head: nn.Module, p: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(p)
        self.head = head

    def forward(self, x):  # noqa: D102
        return self.head(self.dropout(x))


def build_model(
    arch: str,
    encoder: str,
    num_classes: int,
    *,
    dropout: float = 0.0,
    encoder_weights: str | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """An smp model with ``num_classes`` output channels, and Dropout2d before its head."""
    known = architectures()
    if arch.lower() not in known:
        raise UserError(f"--arch '{arch}': unknown architecture; choose one of {', '.join(known)}")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders:
        close = [e for e in encoders if encoder.split("-")[0] in e][:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError(f"--encoder '{encoder}': unknown smp encoder{hint}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"--dropout {dropout}: must be in [0, 1)")
    try:
        model = smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=num_classes,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"--arch {arch} --encoder {encoder}: smp refused ({exc})") from exc
    if dropout > 0:
        if not hasattr(model, "segmentation_head"):
            raise UserError(f"--dropout: architecture '{arch}' has no segmentation_head")
        model.segmentation_head = DropoutHead(model.segmentation_head, dropout)
    return model


def output_stride(model: nn.Module) -> int:
    """Input sides must be multiples of this (the encoder's total downsampling)."""
    encoder = getattr(model, "encoder", None)
    return int(2 ** getattr(encoder, "_depth", 5)) if encoder is not None else 32
