"""Model factory: any segmentation_models_pytorch architecture/encoder, optional dropout.

Nothing is downloaded: encoders start from random weights unless the user names
``--encoder-weights`` (and then smp fetches them, which needs a network).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn
from torch.nn import functional as F

from segdecay.errors import UserError


def architectures() -> list[str]:
    """Architecture names smp accepts (lower case), e.g. unet, fpn, deeplabv3plus."""
    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


class HeadDropout:
    """Forward pre-hook: Dropout2d on the decoder features before the segmentation head.

    A hook rather than a wrapper module, so the head's parameter names (what
    ``--decay-rule`` patterns and checkpoints refer to) stay exactly as without
    ``--dropout``; it follows the head's own train/eval flag and holds no reference to the
    model, so copies of the model stay independent.
    """

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, head: nn.Module, args: tuple) -> tuple:  # noqa: D102
        return (F.dropout2d(args[0], self.p, head.training), *args[1:])

    def __repr__(self) -> str:
        return f"HeadDropout(p={self.p})"


def upgrade_state_dict(state: dict) -> dict:
    """Older checkpoints, written while ``--dropout`` wrapped the head, say ``.head.``."""
    return {k.replace("segmentation_head.head.", "segmentation_head.", 1): v
            for k, v in state.items()}


def _timm_universal(encoder: str) -> bool:
    """smp's ``tu-NAME`` encoders wrap any timm model (ViTs, ConvNeXts, MobileNetV3s)."""
    import timm

    return encoder.startswith("tu-") and timm.is_model(encoder[3:])


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
    if encoder not in encoders and not _timm_universal(encoder):
        close = [e for e in encoders if encoder.split("-")[0] in e][:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        if encoder.startswith("tu-"):
            hint = f": timm has no model '{encoder[3:]}' (timm.list_models() names them)"
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
        model.segmentation_head.register_forward_pre_hook(HeadDropout(dropout))
    return model


def output_stride(model: nn.Module) -> int:
    """Input sides must be multiples of this (the encoder's total downsampling)."""
    encoder = getattr(model, "encoder", None)
    return int(2 ** getattr(encoder, "_depth", 5)) if encoder is not None else 32
